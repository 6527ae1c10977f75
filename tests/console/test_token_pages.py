"""Personal API tokens on one's account page: created with the secret shown once, listed by
prefix, revoked after a confirmation; another person's token is not there to revoke."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from appliance.accounts.models import ApiToken, User
from appliance.accounts.services import token_create
from appliance.audit.models import AuditEvent
from tests.conftest import actor

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("persona", ["admin", "operator", "auditor", "app_owner"])
def test_every_role_makes_a_token_shown_once(console_as: Any, persona: str, request: Any) -> None:
    person = request.getfixturevalue(persona)
    client = console_as(person)
    made = client.post(
        "/console/account/tokens", {"name": "nightly export", "expires_in_days": "30"}
    )
    assert made.status_code == 201
    secret = re.search(r'id="token-secret" tabindex="0">(apt_[^<]+)<', made.content.decode())[1]
    token = ApiToken.objects.get(user=person)
    assert token.name == "nightly export" and secret.startswith(f"apt_{token.prefix}")
    listed = client.get("/console/account/tokens").content.decode()
    assert token.prefix in listed and secret not in listed
    event = AuditEvent.objects.get(action="token.create")
    assert (event.actor_label, event.details["prefix"]) == (person.username, token.prefix)
    api = Client(headers={"Authorization": f"Bearer {secret}"})
    assert api.get("/api/v1/auth/me").json()["username"] == person.username


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "", "expires_in_days": "30"}, "name", "Required."),
        ({"name": "x", "expires_in_days": "soon"}, "expires_in_days", "A whole number of days"),
        ({"name": "x", "expires_in_days": "999"}, "expires_in_days", "Between 1 and 366 days."),
    ],
)
def test_a_bad_form_shows_the_error_at_its_field_and_makes_nothing(
    console_as: Any, operator: User, fields: dict[str, str], field: str, message: str
) -> None:
    response = console_as(operator).post("/console/account/tokens", fields)
    assert response.status_code == 422
    html = response.content.decode()
    assert re.search(rf'id="err_{field}">{re.escape(message)}', html), html
    assert not ApiToken.objects.exists()


def test_a_token_is_revoked_after_a_confirmation(console_as: Any, operator: User) -> None:
    token, secret = token_create(actor=actor(operator), name="ci job")
    client = console_as(operator)
    confirm = client.get(f"/console/account/tokens/{token.pk}/revoke")
    assert confirm.status_code == 200 and b"stop working at their next request" in confirm.content
    assert ApiToken.objects.get().revoked_at is None
    assert client.post(f"/console/account/tokens/{token.pk}/revoke").status_code == 302
    assert ApiToken.objects.get().revoked_at is not None
    assert (
        Client(headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/auth/me").status_code
        == 401
    )
    assert AuditEvent.objects.get(action="token.revoke").actor_label == "olga"


def test_another_persons_token_answers_404(console_as: Any, operator: User, admin: User) -> None:
    theirs, _ = token_create(actor=actor(admin), name="admin script")
    client = console_as(operator)
    assert client.get(f"/console/account/tokens/{theirs.pk}/revoke").status_code == 404
    assert client.post(f"/console/account/tokens/{theirs.pk}/revoke").status_code == 404
    assert ApiToken.objects.get().revoked_at is None
    assert "admin script" not in client.get("/console/account/tokens").content.decode()


def test_anonymous_visitors_go_to_the_sign_in_page(db: None) -> None:
    assert Client().get("/console/account/tokens")["Location"].startswith("/console/sign-in")
