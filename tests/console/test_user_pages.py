"""The console's users pages: the list (role and state filters, search, pagination, second factor
and live sessions), creating a user with a first password shown once, changing a role, and the
confirmed actions (deactivate, reactivate, reset an authenticator, end a session), each with its
permissions per role, its audit event and its refusals (the last active admin stays)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from appliance.accounts import mfa, sessions
from appliance.accounts.choices import Role
from appliance.accounts.models import ApiToken, User, UserSession
from appliance.accounts.services import token_create, user_set_active
from appliance.audit.models import AuditEvent
from tests.conftest import PASSWORD, actor, make_user, with_authenticator

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "operator", "auditor", "app_owner"]
VIEWERS = {"admin", "auditor"}
MANAGERS = {"admin"}


def url(name: str, *args: Any) -> str:
    return reverse(f"console:{name}", args=args)


@pytest.fixture
def tina(db: None) -> User:
    """The person the admin acts on: an operator with an authenticator and a live session."""
    user = make_user("tina", Role.OPERATOR)
    with_authenticator(user)
    sessions.session_open(user=user, source_ip="10.0.0.7", user_agent="Firefox", mfa="totp")
    return user


def as_persona(request: Any, console_as: Any, persona: str) -> tuple[User, Client]:
    user = request.getfixturevalue(persona)
    return user, console_as(user)


def audited(action: str, by: User, about: User) -> bool:
    return AuditEvent.objects.filter(
        action=action, actor_kind="user", actor_id=str(by.pk), object_id=str(about.pk)
    ).exists()


def state(user: User) -> tuple[Any, ...]:
    """What the actions here may change about a person."""
    user.refresh_from_db()
    return (
        user.role,
        user.is_active,
        user.email,
        user.full_name,
        mfa.mfa_enrolled(user),
        UserSession.objects.filter(user=user).count(),
    )


# --- who may open what -----------------------------------------------------------------------


def pages(tina: User) -> list[str]:
    record = UserSession.objects.get(user=tina)
    return [
        url("users"),
        url("user", tina.pk),
        url("user-create"),
        url("user-deactivate", tina.pk),
        url("user-activate", tina.pk),
        url("user-mfa-reset", tina.pk),
        url("user-session-end", tina.pk, record.pk),
    ]


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_page_answers_each_role_as_its_capabilities_say(
    request: Any, console_as: Any, tina: User, persona: str
) -> None:
    _, client = as_persona(request, console_as, persona)
    viewing, managing = pages(tina)[:2], pages(tina)[2:]

    for page in viewing:
        assert client.get(page).status_code == (200 if persona in VIEWERS else 403), page
    for page in managing:
        assert client.get(page).status_code == (200 if persona in MANAGERS else 403), page


def test_anonymous_people_are_sent_to_sign_in(tina: User) -> None:
    for page in pages(tina):
        response = Client().get(page)
        assert response.status_code == 302
        assert response["Location"].startswith("/console/sign-in")


@pytest.mark.parametrize("persona", ["operator", "auditor", "app_owner"])
def test_only_admins_may_change_anything(
    request: Any, console_as: Any, tina: User, persona: str
) -> None:
    _, client = as_persona(request, console_as, persona)
    record = UserSession.objects.get(user=tina)
    before, users, events = state(tina), User.objects.count(), AuditEvent.objects.count()
    posts = [
        (url("user-create"), {"username": "mallory", "role": Role.ADMIN}),
        (url("user-update", tina.pk), {"role": Role.ADMIN, "full_name": "x", "email": ""}),
        (url("user-deactivate", tina.pk), {}),
        (url("user-activate", tina.pk), {}),
        (url("user-mfa-reset", tina.pk), {}),
        (url("user-session-end", tina.pk, record.pk), {}),
    ]

    for page, data in posts:
        assert client.post(page, data).status_code == 403, page

    assert state(tina) == before and User.objects.count() == users
    assert AuditEvent.objects.count() == events


def test_an_auditor_sees_a_user_without_the_controls(
    console_as: Any, auditor: User, tina: User
) -> None:
    html = console_as(auditor).get(url("user", tina.pk)).content.decode()

    assert "tina" in html and "Operator" in html and "10.0.0.7" in html
    assert url("user-update", tina.pk) not in html
    assert url("user-deactivate", tina.pk) not in html
    assert url("user-mfa-reset", tina.pk) not in html
    assert "End session" not in html


def test_an_unknown_user_is_not_found(console_as: Any, admin: User) -> None:
    client = console_as(admin)

    assert client.get(url("user", 999_999)).status_code == 404
    assert client.get(url("user-deactivate", 999_999)).status_code == 404
    assert client.post(url("user-update", 999_999), {"role": Role.ADMIN}).status_code == 404


# --- the list --------------------------------------------------------------------------------


def listed(html: str) -> set[str]:
    """The user names in the list's table."""
    return set(re.findall(r'<td><a href="/console/users/\d+">([^<]+)</a></td>', html))


def row_of(html: str, username: str) -> str:
    match = re.search(rf"<tr>\s*<td><a href=\"[^\"]+\">{username}</a>.*?</tr>", html, re.S)
    assert match, f"no row for {username}"
    return match.group(0)


def test_the_list_shows_role_state_authenticator_and_live_sessions(
    console_as: Any, admin: User, tina: User, app_owner: User
) -> None:
    sessions.session_open(user=tina, source_ip="10.0.0.8", user_agent="Safari", mfa="totp")
    user_set_active(actor=actor(admin), user=app_owner, active=False)

    html = console_as(admin).get(url("users")).content.decode()

    tina_row = row_of(html, "tina")
    assert "Operator" in tina_row and "Active" in tina_row and "Set up" in tina_row
    assert '<td class="num">2</td>' in tina_row
    owen_row = row_of(html, "owen")
    assert "Deactivated" in owen_row and "Not set up" in owen_row
    assert '<td class="num">0</td>' in owen_row
    # alice is an admin without an authenticator, signed in once (this client)
    alice_row = row_of(html, "alice")
    assert "Not set up (required)" in alice_row and '<td class="num">1</td>' in alice_row


def test_the_list_filters_by_role_state_and_search(
    console_as: Any, admin: User, auditor: User, tina: User, operator: User
) -> None:
    user_set_active(actor=actor(admin), user=operator, active=False)
    client = console_as(admin)

    by_role = client.get(url("users"), {"role": Role.OPERATOR}).content.decode()
    assert listed(by_role) == {"tina", "olga"}
    by_state = client.get(url("users"), {"role": Role.OPERATOR, "active": "no"}).content.decode()
    assert listed(by_state) == {"olga"}
    by_search = client.get(url("users"), {"q": "AUD"}).content.decode()
    assert listed(by_search) == {"audrey"}
    nonsense = client.get(url("users"), {"role": "overlord", "active": "maybe", "page": "x"})
    assert nonsense.status_code == 200


def test_the_list_is_paginated_and_keeps_its_filters(console_as: Any, admin: User) -> None:
    for i in range(30):
        make_user(f"user{i:02d}", Role.APP_OWNER)
    client = console_as(admin)

    first = client.get(url("users"), {"role": Role.APP_OWNER}).content.decode()
    second = client.get(url("users"), {"role": Role.APP_OWNER, "page": 2}).content.decode()

    assert "Page 1 of 2" in first and "role=app_owner&amp;page=2" in first
    assert listed(first) == {f"user{i:02d}" for i in range(25)}
    assert listed(second) == {f"user{i:02d}" for i in range(25, 30)}


# --- creating a user -------------------------------------------------------------------------


def test_an_admin_creates_a_user_and_sees_the_first_password_once(
    console_as: Any, admin: User
) -> None:
    client = console_as(admin)

    response = client.post(
        url("user-create"),
        {"username": "nora", "full_name": "Nora N", "email": "nora@h.example", "role": "auditor"},
    )

    assert response.status_code == 200
    html = response.content.decode()
    secret = re.search(r'<p class="secret mono" id="initial-password">([^<]+)</p>', html)
    assert secret
    nora = User.objects.get(username="nora")
    assert (nora.role, nora.full_name, nora.email, nora.is_active) == (
        "auditor",
        "Nora N",
        "nora@h.example",
        True,
    )
    assert nora.check_password(secret.group(1))
    assert AuditEvent.objects.filter(
        action="user.create", actor_id=str(admin.pk), object_id=str(nora.pk)
    ).exists()
    # The password is not kept anywhere the console could show it again.
    assert secret.group(1) not in client.get(url("user", nora.pk)).content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"username": "", "role": "auditor"}, "username", "Required."),
        ({"username": "two words", "role": "auditor"}, "username", "no spaces"),
        ({"username": "nora", "role": "overlord"}, "role", "Choose a role from the list."),
        ({"username": "nora", "role": "auditor", "email": "x" * 300}, "email", "at most 254"),
    ],
)
def test_a_bad_new_user_is_refused_at_its_field_and_nothing_is_made(
    console_as: Any, admin: User, data: dict[str, str], field: str, message: str
) -> None:
    client = console_as(admin)
    users, events = User.objects.count(), AuditEvent.objects.count()

    response = client.post(url("user-create"), data)

    assert response.status_code == 422
    html = response.content.decode()
    error = re.search(rf'<p class="field-error" id="err_{field}">([^<]*)</p>', html)
    assert error and message in error.group(1)
    assert User.objects.count() == users and AuditEvent.objects.count() == events


def test_a_taken_user_name_is_refused_with_a_conflict(
    console_as: Any, admin: User, operator: User
) -> None:
    users = User.objects.count()

    response = console_as(admin).post(url("user-create"), {"username": "OLGA", "role": "auditor"})

    assert response.status_code == 409
    assert "already exists" in response.content.decode()
    assert User.objects.count() == users


# --- changing a role -------------------------------------------------------------------------


def test_an_admin_changes_a_role_and_details(console_as: Any, admin: User, tina: User) -> None:
    response = console_as(admin).post(
        url("user-update", tina.pk),
        {"role": "auditor", "full_name": "Tina T", "email": "tina@h.example"},
    )

    assert response.status_code == 302 and response["Location"] == url("user", tina.pk)
    tina.refresh_from_db()
    assert (tina.role, tina.full_name, tina.email) == ("auditor", "Tina T", "tina@h.example")
    event = AuditEvent.objects.get(action="user.update", object_id=str(tina.pk))
    assert event.actor_id == str(admin.pk)
    assert event.details["role"] == {"from": "operator", "to": "auditor"}


def test_a_bad_role_is_refused_at_its_field(console_as: Any, admin: User, tina: User) -> None:
    client = console_as(admin)
    before, events = state(tina), AuditEvent.objects.count()

    response = client.post(
        url("user-update", tina.pk), {"role": "root", "full_name": "", "email": ""}
    )

    assert response.status_code == 422
    assert 'id="err_role">Choose a role from the list.' in response.content.decode()
    assert state(tina) == before and AuditEvent.objects.count() == events


def test_the_last_active_admin_cannot_be_demoted(console_as: Any, admin: User) -> None:
    client = console_as(admin)
    events = AuditEvent.objects.count()

    response = client.post(
        url("user-update", admin.pk), {"role": "operator", "full_name": "", "email": admin.email}
    )

    assert response.status_code == 409
    assert "The last active administrator cannot lose the role." in response.content.decode()
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN and AuditEvent.objects.count() == events


def test_an_admin_may_be_demoted_while_another_is_active(
    console_as: Any, admin: User, admin2: User
) -> None:
    response = console_as(admin).post(
        url("user-update", admin2.pk), {"role": "auditor", "full_name": "", "email": admin2.email}
    )

    assert response.status_code == 302
    admin2.refresh_from_db()
    assert admin2.role == Role.AUDITOR
    assert audited("user.update", admin, admin2)


# --- deactivate and reactivate ---------------------------------------------------------------


def test_deactivating_asks_first_then_locks_the_account_out(
    console_as: Any, admin: User, tina: User
) -> None:
    token_create(actor=actor(tina), name="script")
    client = console_as(admin)

    confirm = client.get(url("user-deactivate", tina.pk))

    assert confirm.status_code == 200
    assert "tina will no longer be able to sign in" in confirm.content.decode()
    assert '<form method="post">' in confirm.content.decode()
    tina.refresh_from_db()
    assert tina.is_active and UserSession.objects.filter(user=tina).exists()

    done = client.post(url("user-deactivate", tina.pk))

    assert done.status_code == 302 and done["Location"] == url("user", tina.pk)
    tina.refresh_from_db()
    assert not tina.is_active
    assert not UserSession.objects.filter(user=tina).exists()
    assert not ApiToken.objects.filter(user=tina, revoked_at__isnull=True).exists()
    assert audited("user.deactivate", admin, tina)
    assert "tina was deactivated." in client.get(done["Location"]).content.decode()


def test_an_admin_cannot_deactivate_themselves(console_as: Any, admin: User, admin2: User) -> None:
    client = console_as(admin)
    events = AuditEvent.objects.count()

    response = client.post(url("user-deactivate", admin.pk))

    assert response.status_code == 409
    assert "You cannot deactivate your own account." in response.content.decode()
    admin.refresh_from_db()
    assert admin.is_active and AuditEvent.objects.count() == events


def test_reactivating_asks_first_then_lets_them_sign_in(
    console_as: Any, admin: User, tina: User
) -> None:
    user_set_active(actor=actor(admin), user=tina, active=False)
    client = console_as(admin)

    confirm = client.get(url("user-activate", tina.pk))

    assert "tina will be able to sign in again as Operator" in confirm.content.decode()
    tina.refresh_from_db()
    assert not tina.is_active

    assert client.post(url("user-activate", tina.pk)).status_code == 302
    tina.refresh_from_db()
    assert tina.is_active and tina.check_password(PASSWORD)
    assert audited("user.activate", admin, tina)


# --- the authenticator -----------------------------------------------------------------------


def test_resetting_an_authenticator_asks_first_then_removes_it(
    console_as: Any, admin: User, tina: User
) -> None:
    client = console_as(admin)

    confirm = client.get(url("user-mfa-reset", tina.pk))

    assert "The authenticator and all recovery codes of tina will be removed" in (
        confirm.content.decode()
    )
    assert mfa.mfa_enrolled(tina)

    assert client.post(url("user-mfa-reset", tina.pk)).status_code == 302
    assert not mfa.mfa_enrolled(tina) and mfa.recovery_codes_left(tina) == 0
    assert audited("auth.mfa_reset", admin, tina)


def test_resetting_a_missing_authenticator_is_refused(
    console_as: Any, admin: User, operator: User
) -> None:
    client = console_as(admin)
    events = AuditEvent.objects.count()

    response = client.post(url("user-mfa-reset", operator.pk))

    assert response.status_code == 409
    assert "That person has no authenticator." in response.content.decode()
    assert AuditEvent.objects.count() == events


# --- sessions --------------------------------------------------------------------------------


def test_ending_a_session_asks_first_then_signs_it_out(
    console_as: Any, admin: User, tina: User
) -> None:
    record = UserSession.objects.get(user=tina)
    client = console_as(admin)

    detail = client.get(url("user", tina.pk)).content.decode()
    assert url("user-session-end", tina.pk, record.pk) in detail
    confirm = client.get(url("user-session-end", tina.pk, record.pk))
    assert "started from 10.0.0.7 (Firefox) will be signed out at once" in (
        confirm.content.decode()
    )
    assert UserSession.objects.filter(pk=record.pk).exists()

    done = client.post(url("user-session-end", tina.pk, record.pk))

    assert done.status_code == 302
    assert not UserSession.objects.filter(pk=record.pk).exists()
    event = AuditEvent.objects.get(action="auth.session_end", object_id=str(tina.pk))
    assert event.actor_id == str(admin.pk) and event.details["session"] == record.pk


def test_a_session_of_someone_else_is_not_found_under_this_user(
    console_as: Any, admin: User, tina: User, operator: User
) -> None:
    record = UserSession.objects.get(user=tina)

    response = console_as(admin).post(url("user-session-end", operator.pk, record.pk))

    assert response.status_code == 404
    assert UserSession.objects.filter(pk=record.pk).exists()
