"""The one error contract: every error is ``{code, detail, fields, request_id}`` with the request id
of the X-Request-ID header; unknown fields are refused; internal errors and passwords never leak."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from appliance.accounts.models import ApiToken, User
from appliance.audit.models import AuditEvent
from appliance.registry import selectors as registry_selectors
from tests.conftest import PASSWORD, ApiClient, make_user

pytestmark = pytest.mark.django_db

ERROR_KEYS = {"code", "detail", "fields", "request_id"}
CANARY = "secret-canary-value"


def assert_error_contract(response: Any) -> dict[str, Any]:
    """The body is exactly the error shape, and its request id is the response header's."""
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["code"], str)
    assert body["code"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["fields"], dict)
    for name, messages in body["fields"].items():
        assert isinstance(name, str)
        assert messages
        assert all(isinstance(m, str) for m in messages)
    assert body["request_id"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


Send = Callable[[dict[str, ApiClient]], Any]


def _raw_post(path: str, raw: str) -> Send:
    def send(clients: dict[str, ApiClient]) -> Any:
        admin = clients["admin"]
        return admin.client.post(
            f"/api/v1{path}", data=raw, content_type="application/json", headers=admin.headers
        )

    return send


ERROR_CASES: dict[str, tuple[Send, int, str]] = {
    "anonymous": (lambda c: c["anonymous"].get("/auth/me"), 401, "not_authenticated"),
    "bad token": (
        lambda c: ApiClient("apt_not-a-real-token").get("/auth/me"),
        401,
        "not_authenticated",
    ),
    "role refused": (lambda c: c["operator"].get("/users"), 403, "permission_denied"),
    "missing object": (lambda c: c["admin"].get("/users/987654"), 404, "not_found"),
    "missing job": (
        lambda c: c["admin"].get("/jobs/00000000-0000-0000-0000-000000000000"),
        404,
        "not_found",
    ),
    "duplicate": (
        lambda c: c["admin"].post("/users", {"username": "OLGA", "role": "operator"}),
        409,
        "duplicate_username",
    ),
    "schema": (lambda c: c["admin"].post("/tokens", {"name": ""}), 422, "validation_error"),
    "path parameter": (lambda c: c["admin"].get("/users/abc"), 422, "validation_error"),
    "query parameter": (lambda c: c["admin"].get("/users?role=king"), 422, "validation_error"),
    "domain rule": (
        lambda c: c["admin"].post("/models", {"name": "m", "path": "/etc"}),
        422,
        "path_not_allowed",
    ),
    "json array body": (_raw_post("/tokens", "[1, 2]"), 422, "validation_error"),
    "bad login": (
        lambda c: c["anonymous"].post("/auth/login", {"username": "olga", "password": "wrong!"}),
        401,
        "invalid_credentials",
    ),
}


@pytest.fixture
def clients(api_as: Any, admin: User, operator: User) -> dict[str, ApiClient]:
    return {"admin": api_as(admin), "operator": api_as(operator), "anonymous": api_as(None)}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_every_error_has_the_one_body_and_the_request_id_header(
    case: str, clients: dict[str, ApiClient]
) -> None:
    send, status, code = ERROR_CASES[case]
    response = send(clients)
    assert response.status_code == status, response.content
    assert assert_error_contract(response)["code"] == code


def test_field_errors_name_the_field_without_its_source(clients: dict[str, ApiClient]) -> None:
    response = clients["admin"].post("/tokens", {"name": "x", "expires_in_days": 0})
    assert response.status_code == 422
    assert list(assert_error_contract(response)["fields"]) == ["expires_in_days"]


def test_callers_request_id_is_echoed_in_the_error_and_the_audit_event(
    clients: dict[str, ApiClient],
) -> None:
    response = clients["operator"].get("/users", headers={"X-Request-ID": "script-run-0001"})
    assert response.status_code == 403
    assert assert_error_contract(response)["request_id"] == "script-run-0001"
    denial = AuditEvent.objects.get(action="permission.denied")
    assert denial.request_id == "script-run-0001"


def test_throttled_login_has_the_error_body_and_retry_after(
    admin: User, settings: Any, clients: dict[str, ApiClient]
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 1
    bad = {"username": "alice", "password": "not the password"}
    assert clients["anonymous"].post("/auth/login", bad).status_code == 401
    response = clients["anonymous"].post("/auth/login", bad)
    assert response.status_code == 429
    assert assert_error_contract(response)["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_malformed_json_is_refused_with_the_error_body_and_changes_nothing(
    clients: dict[str, ApiClient],
) -> None:
    before = ApiToken.objects.count()
    response = _raw_post("/tokens", '{"name": "x",')(clients)
    assert 400 <= response.status_code < 500
    assert_error_contract(response)
    assert ApiToken.objects.count() == before


def test_malformed_json_answers_400_bad_request(clients: dict[str, ApiClient]) -> None:
    # Unparseable syntax is 400; well-formed but invalid input is 422 (docs/api.md).
    response = _raw_post("/tokens", '{"name": "x",')(clients)
    assert response.status_code == 400
    assert assert_error_contract(response)["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/users",
            {"username": "mallory", "role": "operator", "is_superuser": True},
            "is_superuser",
        ),
        ("/users", {"username": "mallory", "role": "operator", "is_staff": True}, "is_staff"),
        ("/users", {"username": "mallory", "role": "operator", "is_active": False}, "is_active"),
        ("/tokens", {"name": "t", "role": "admin"}, "role"),
        ("/tokens", {"name": "t", "user": 1}, "user"),
        ("/models", {"name": "m", "path": "/x", "status": "approved"}, "status"),
        ("/auth/login", {"username": "a", "password": "b", "remember": True}, "remember"),
    ],
)
def test_unknown_fields_are_refused_so_nothing_can_be_mass_assigned(
    path: str, body: dict[str, Any], field: str, clients: dict[str, ApiClient]
) -> None:
    users, tokens = User.objects.count(), ApiToken.objects.count()
    response = clients["admin"].post(path, body)
    assert response.status_code == 422
    error = assert_error_contract(response)
    assert error["code"] == "validation_error"
    assert field in error["fields"]
    assert (User.objects.count(), ApiToken.objects.count()) == (users, tokens)


def test_unknown_fields_are_refused_on_update(
    clients: dict[str, ApiClient], operator: User
) -> None:
    response = clients["admin"].patch(f"/users/{operator.pk}", {"role": "admin", "password": "x"})
    assert response.status_code == 422
    assert "password" in assert_error_contract(response)["fields"]
    operator.refresh_from_db()
    assert operator.role == "operator"


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v1/users/", "/api/v1/", "/api/v1/models/1/x"]
)
def test_unknown_api_route_is_404(path: str, clients: dict[str, ApiClient]) -> None:
    admin = clients["admin"]
    response = admin.client.get(path, headers=admin.headers)
    assert response.status_code == 404
    assert response["X-Request-ID"]


def test_unknown_api_route_answers_with_the_error_body(clients: dict[str, ApiClient]) -> None:
    admin = clients["admin"]
    response = admin.client.get("/api/v1/nope", headers=admin.headers)
    assert response.status_code == 404
    assert assert_error_contract(response)["code"] == "not_found"


def test_unexpected_exception_is_500_without_its_message(
    clients: dict[str, ApiClient], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(**kwargs: Any) -> Any:
        raise RuntimeError(CANARY)

    monkeypatch.setattr(registry_selectors, "model_list", explode)
    response = clients["admin"].get("/models")
    assert response.status_code == 500
    body = assert_error_contract(response)
    assert body["code"] == "internal_error"
    assert CANARY not in response.content.decode()
    assert all(CANARY not in value for value in response.headers.values())
    # The traceback goes to the server log, where the request id finds it.
    assert any(
        r.name == "appliance.api.errors" and r.levelno == logging.ERROR and r.exc_info
        for r in caplog.records
    )


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
    return "\n".join(parts)


def _everything_audited() -> str:
    return json.dumps(
        list(AuditEvent.objects.values()), default=str
    )  # every column, details included


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.request", "django.server", "django.security", "appliance"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_passwords_sent_to_login_never_reach_the_audit_log_or_the_logs(
    admin: User, debug_logs: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    make_user("carol", "operator")
    carol = User.objects.get(username="carol")
    carol.set_password(f"{CANARY}-good")
    carol.save()
    anonymous = ApiClient(None)
    responses = [
        anonymous.post("/auth/login", {"username": "alice", "password": f"{CANARY}-wrong"}),
        anonymous.post("/auth/login", {"username": "nobody", "password": f"{CANARY}-unknown"}),
        anonymous.post("/auth/login", {"username": "alice", "password": f"{CANARY}-x", "x": 1}),
        anonymous.post("/auth/login", {"username": "alice", "password": CANARY * 100}),
        anonymous.post("/auth/login", {"username": "carol", "password": f"{CANARY}-good"}),
    ]
    for _ in range(4):  # into the throttle
        responses.append(
            anonymous.post("/auth/login", {"username": "alice", "password": f"{CANARY}-again"})
        )
    assert [r.status_code for r in responses[:5]] == [401, 401, 422, 422, 200]
    assert responses[-1].status_code == 429
    assert AuditEvent.objects.filter(action="auth.login").count() >= 4
    assert CANARY not in _everything_audited()
    assert CANARY not in _everything_logged(debug_logs)
    for response in responses:
        assert CANARY not in response.content.decode()


def test_new_password_never_reaches_the_audit_log_or_the_logs(
    api_as: Any, operator: User, debug_logs: pytest.LogCaptureFixture
) -> None:
    client = api_as(operator)
    good = client.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": f"{CANARY}-new-1"}
    )
    wrong = client.post(
        "/auth/password", {"current_password": f"{CANARY}-cur", "new_password": f"{CANARY}-new-2"}
    )
    weak = client.post(
        "/auth/password", {"current_password": f"{CANARY}-new-1", "new_password": "12345678"}
    )
    assert (good.status_code, wrong.status_code, weak.status_code) == (204, 422, 422)
    assert CANARY not in _everything_audited()
    assert CANARY not in _everything_logged(debug_logs)
    assert CANARY not in wrong.content.decode() + weak.content.decode()


def test_session_client_gets_json_errors_too(operator: User) -> None:
    client = Client()
    client.post(
        "/api/v1/auth/login",
        data=json.dumps({"username": "olga", "password": PASSWORD}),
        content_type="application/json",
    )
    response = client.get("/api/v1/audit/events")
    assert response.status_code == 403
    assert assert_error_contract(response)["code"] == "permission_denied"
