"""Emergency access in the console: opened from a person's page with a reason and the admin's
own code, shown to the elevated person on every page, listed for review, ended early."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from appliance.accounts.models import BreakGlass, User
from appliance.audit.models import AuditEvent
from tests.conftest import fresh_code, with_authenticator

pytestmark = pytest.mark.django_db
REASON = "Night shift: the on-call operator must restore the ward deployment"


@pytest.fixture
def ready(admin: User, operator: User) -> tuple[User, User]:
    with_authenticator(admin)
    with_authenticator(operator)
    return admin, operator


def open_form(client: Client, person: User, **fields: str) -> Any:
    return client.post(f"/console/users/{person.pk}/break-glass", fields)


def test_an_admin_opens_emergency_access_and_the_person_sees_it_on_every_page(
    console_as: Any, ready: tuple[User, User]
) -> None:
    admin, operator = ready
    client, theirs = console_as(admin), console_as(operator)
    assert theirs.get("/console/users").status_code == 403
    form = client.get(f"/console/users/{operator.pk}/break-glass")
    assert (
        form.status_code == 200 and b"will act as an <strong>Administrator</strong>" in form.content
    )
    done = open_form(client, operator, reason=REASON, minutes="30", code=fresh_code(admin))
    assert done.status_code == 302 and done["Location"] == "/console/break-glass"

    page = theirs.get("/console/users")
    assert page.status_code == 200  # acting as an admin now
    assert b"Emergency access: you act as Administrator" in page.content
    listed = client.get("/console/break-glass").content.decode()
    assert REASON in listed and "End now" in listed
    event = AuditEvent.objects.get(action="access.break_glass_grant")
    assert event.actor_label == "alice" and event.details["severity"] == "high"


def test_a_wrong_code_or_a_short_reason_shows_the_error_and_opens_nothing(
    console_as: Any, ready: tuple[User, User]
) -> None:
    admin, operator = ready
    client = console_as(admin)
    wrong = open_form(client, operator, reason=REASON, minutes="30", code="000000")
    assert wrong.status_code == 401 and b"That code is not right." in wrong.content
    short = open_form(client, operator, reason="urgent", minutes="30", code="000000")
    assert short.status_code == 422 and b"it is reviewed" in short.content
    nonsense = open_form(client, operator, reason=REASON, minutes="soon", code="000000")
    assert nonsense.status_code == 422 and b"Pick how long." in nonsense.content
    assert not BreakGlass.objects.exists()


def test_an_admin_ends_it_after_a_confirmation(console_as: Any, ready: tuple[User, User]) -> None:
    admin, operator = ready
    client = console_as(admin)
    open_form(client, operator, reason=REASON, minutes="30", code=fresh_code(admin))
    grant = BreakGlass.objects.get()
    confirm = client.get(f"/console/break-glass/{grant.pk}/end")
    assert confirm.status_code == 200 and b"acts with their own role" in confirm.content
    assert BreakGlass.objects.get().ended_at is None
    assert client.post(f"/console/break-glass/{grant.pk}/end").status_code == 302
    assert BreakGlass.objects.get().ended_at is not None
    assert console_as(operator).get("/console/users").status_code == 403
    assert client.get(f"/console/break-glass/{grant.pk}/end").status_code == 404


@pytest.mark.parametrize(
    ("persona", "sees_list"), [("auditor", True), ("operator", False), ("app_owner", False)]
)
def test_who_may_see_and_who_may_open_emergency_access(
    console_as: Any, ready: tuple[User, User], persona: str, sees_list: bool, request: Any
) -> None:
    admin, operator = ready
    person = request.getfixturevalue(persona)
    client = console_as(person)
    assert client.get("/console/break-glass").status_code == (200 if sees_list else 403)
    target = admin if persona != "admin" else operator
    assert client.get(f"/console/users/{target.pk}/break-glass").status_code == 403
    refused = open_form(client, target, reason=REASON, minutes="30", code="123456")
    assert refused.status_code == 403
    assert not BreakGlass.objects.exists()


def test_anonymous_visitors_go_to_the_sign_in_page(db: None, admin: User) -> None:
    for url in ("/console/break-glass", f"/console/users/{admin.pk}/break-glass"):
        assert Client().get(url)["Location"].startswith("/console/sign-in")
