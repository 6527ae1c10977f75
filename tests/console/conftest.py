"""Console clients for each persona: signed in as the console signs people in (a session with
its record), so the session limits apply as in production."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from appliance.accounts.models import User
from appliance.accounts.sessions import session_open
from appliance.accounts.signin import SESSION_RECORD


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    record = session_open(user=user, source_ip="127.0.0.1", user_agent="pytest", mfa="totp")
    session = client.session
    session[SESSION_RECORD] = record.pk
    session.save()
    return client


@pytest.fixture
def console_as(db: None) -> Any:
    """``console_as(user)`` → a Django test client signed in to the console as that person."""
    return signed_in
