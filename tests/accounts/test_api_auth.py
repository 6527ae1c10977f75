"""Sign-in, sign-out, throttling, CSRF and password change over the management API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from tests.conftest import PASSWORD, fresh_code, make_user, with_authenticator

pytestmark = pytest.mark.django_db


def login(client: Client, username: str, password: str, code: str | None = None) -> Any:
    body = {"username": username, "password": password}
    if code is not None:
        body["code"] = code
    return client.post("/api/v1/auth/login", data=json.dumps(body), content_type="application/json")


@pytest.fixture
def admin(admin: User) -> User:
    """Admins must have an authenticator to sign in."""
    with_authenticator(admin)
    return admin


def test_login_starts_a_session_and_is_audited(admin: User) -> None:
    client = Client()
    response = login(client, "alice", PASSWORD, fresh_code(admin))
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert client.get("/api/v1/auth/me").json()["username"] == "alice"
    event = AuditEvent.objects.get(action="auth.login", outcome="success")
    assert (event.actor_kind, event.actor_label) == ("user", "alice")


def test_login_gives_a_new_session_id(admin: User) -> None:
    client = Client()
    client.get("/api/v1/auth/csrf")
    client.cookies["sessionid"] = "attacker-chosen-session-id"
    login(client, "alice", PASSWORD, fresh_code(admin))
    assert client.cookies["sessionid"].value != "attacker-chosen-session-id"


def test_wrong_password_and_unknown_user_get_the_same_answer(admin: User) -> None:
    wrong = login(Client(), "alice", "not the password at all")
    unknown = login(Client(), "nobody", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_failed_login_is_audited_without_the_user_name_in_clear(admin: User) -> None:
    login(Client(), "alice", "not the password at all")
    event = AuditEvent.objects.get(action="auth.login", outcome="failure")
    assert event.actor_kind == "anonymous"
    assert event.details["username"].startswith("hmac-sha256:")
    assert "alice" not in json.dumps(event.details)
    assert "not the password" not in json.dumps(event.details)


def test_repeated_failures_are_throttled_even_with_the_right_password(
    admin: User, settings: Any
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    for _ in range(3):
        assert login(Client(), "alice", "wrong password 123").status_code == 401
    response = login(Client(), "alice", PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["code"] == "throttled"


def test_unknown_user_names_are_throttled_like_known_ones(db: None, settings: Any) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    for _ in range(2):
        login(Client(), "ghost", "wrong password 123")
    assert login(Client(), "ghost", "wrong password 123").status_code == 429


def test_deactivated_user_cannot_sign_in(admin: User) -> None:
    admin.is_active = False
    admin.save()
    assert login(Client(), "alice", PASSWORD).status_code == 401


def test_logout_ends_the_session_server_side(admin: User) -> None:
    client = Client(enforce_csrf_checks=True)
    csrf = client.get("/api/v1/auth/csrf").json()["csrf_token"]
    login(client, "alice", PASSWORD, fresh_code(admin))
    old_cookie = client.cookies["sessionid"].value
    response = client.post(
        "/api/v1/auth/logout", headers={"X-CSRFToken": client.cookies["csrftoken"].value}
    )
    assert response.status_code == 204, csrf
    replay = Client()
    replay.cookies["sessionid"] = old_cookie
    assert replay.get("/api/v1/auth/me").status_code == 401
    assert AuditEvent.objects.filter(action="auth.logout").count() == 1


def test_session_write_without_csrf_token_is_refused(admin: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.get("/api/v1/auth/csrf")
    assert login(client, "alice", PASSWORD, fresh_code(admin)).status_code == 200
    response = client.post(
        "/api/v1/tokens", data=json.dumps({"name": "x"}), content_type="application/json"
    )
    assert response.status_code in (401, 403)
    assert not admin.api_tokens.exists()


def test_password_change_needs_the_current_password_and_follows_the_rules(
    api_as: Any, admin: User
) -> None:
    client = api_as(admin)
    wrong = client.post("/auth/password", {"current_password": "nope", "new_password": "x" * 20})
    assert wrong.status_code == 422
    assert "current_password" in wrong.data["fields"]
    weak = client.post("/auth/password", {"current_password": PASSWORD, "new_password": "short"})
    assert weak.status_code == 422
    assert "new_password" in weak.data["fields"]
    ok = client.post(
        "/auth/password",
        {"current_password": PASSWORD, "new_password": "a much longer passphrase 7"},
    )
    assert ok.status_code == 204
    admin.refresh_from_db()
    assert admin.check_password("a much longer passphrase 7")
    assert AuditEvent.objects.filter(action="user.password_change").count() == 1


def test_me_without_credentials_is_401_in_the_error_format(db: None) -> None:
    response = Client().get("/api/v1/auth/me")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "not_authenticated"
    assert set(body) == {"code", "detail", "fields", "request_id"}


def test_login_from_a_form_post_is_refused_with_415(admin: User) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD})
    response = Client().post("/api/v1/auth/login", data=body, content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_an_admin_without_an_authenticator_cannot_sign_in_with_a_password_alone(
    db: None,
) -> None:
    make_user("newadmin", Role.ADMIN)
    response = login(Client(), "newadmin", PASSWORD)
    assert response.status_code == 403
    assert response.json()["code"] == "mfa_enrolment_required"
    assert not AuditEvent.objects.filter(action="auth.login", outcome="success").exists()


def test_a_person_with_an_authenticator_needs_its_code(admin: User) -> None:
    missing = login(Client(), "alice", PASSWORD)
    wrong = login(Client(), "alice", PASSWORD, "000000")
    assert (missing.status_code, missing.json()["code"]) == (403, "mfa_code_required")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_mfa_code")
    event = AuditEvent.objects.get(action="auth.mfa", outcome="failure")
    assert event.details["reason"] == "bad_code"


def test_a_code_works_once(admin: User) -> None:
    code = fresh_code(admin)
    assert login(Client(), "alice", PASSWORD, code).status_code == 200
    assert login(Client(), "alice", PASSWORD, code).status_code == 401


def test_an_operator_without_an_authenticator_signs_in_with_a_password(operator: User) -> None:
    response = login(Client(), "olga", PASSWORD)
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="auth.login", outcome="success")
    assert event.details["mfa"] == "none"
