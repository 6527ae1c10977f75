"""Every refusal in OpenAI's error shape, with the right status, and nothing forwarded."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import ApiKey
from appliance.audit.models import AuditEvent
from appliance.fleet.choices import EngineState
from appliance.fleet.models import EngineInstance
from appliance.gateway.models import UsageRecord
from tests.conftest import actor

MESSAGES = [{"role": "user", "content": "hello"}]
SERVER_LOGGERS = {"appliance", "django", "uvicorn", "asyncio"}


@pytest.fixture
def ready(application: Any, approved_model: Any, serve: Any, fake_engines: Any) -> Any:
    """An engine serving the model, and a key granted it."""
    engine = fake_engines()
    serve(approved_model, [engine])
    app, key = application(grants=[approved_model])
    return app, key, engine


def post(gateway: Any, key: str | None, body: Any = None, **options: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(options.pop("headers", {}))
    path = options.pop("path", "/chat/completions")
    if body is None:
        body = {"model": "base-model", "messages": MESSAGES}
    return gateway.run(
        lambda: httpx.post(f"{gateway.url}{path}", json=body, headers=headers, **options)
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["type"]
    return error


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
        ("Bearer not-a-key", "invalid_api_key"),
        ("Bearer apk_000000000000_wrongsecret", "invalid_api_key"),
    ],
)
def test_no_or_a_wrong_key_is_401(gateway: Any, ready: Any, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = post(gateway, None, headers=headers)
    assert_error(response, 401, code)
    assert not ready[2].requests


def test_the_openai_client_sees_an_authentication_error(gateway: Any, ready: Any) -> None:
    client = gateway.client("apk_000000000000_wrong")
    with pytest.raises(openai.AuthenticationError):
        gateway.run(lambda: client.models.list())


def test_a_key_in_the_query_string_is_refused_and_never_logged(
    gateway: Any, ready: Any, caplog: Any
) -> None:
    _, key, engine = ready
    with caplog.at_level(logging.DEBUG):
        response = post(gateway, None, params={"api_key": key})
    assert_error(response, 401, "api_key_in_url")
    server_side = [r for r in caplog.records if r.name.split(".")[0] in SERVER_LOGGERS]
    assert server_side  # the server's loggers were captured ...
    assert not [r for r in server_side if key in r.getMessage()]  # ... and none holds the key
    assert not engine.requests


def test_a_revoked_key_stops_working_on_the_next_request(
    gateway: Any, ready: Any, app_owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    app, key, _ = ready
    assert post(gateway, key).status_code == 200  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        access.api_key_revoke(actor=actor(app_owner), key=app.keys.get())
    assert_error(post(gateway, key), 401, "api_key_revoked")


def test_a_key_stops_working_when_it_expires(gateway: Any, ready: Any) -> None:
    _, key, _ = ready
    ApiKey.objects.update(expires_at=timezone.now() + timedelta(seconds=1))
    assert post(gateway, key).status_code == 200  # cached with its expiry
    time.sleep(1.1)
    assert_error(post(gateway, key), 401, "api_key_expired")


def test_a_disabled_application_is_403(
    gateway: Any, ready: Any, admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    app, key, _ = ready
    assert post(gateway, key).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        access.application_update(actor=actor(admin), application=app, status="disabled")
    assert_error(post(gateway, key), 403, "application_disabled")


def test_a_model_without_a_grant_looks_missing_and_the_attempt_is_audited(
    gateway: Any,
    application: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
) -> None:
    engine = fake_engines()
    serve(approved_model, [engine], adapters=approved_adapters)
    application(name="fraud-screen", grants=[approved_model])  # another app's grant
    _, key = application(grants=[approved_adapters[0]])

    for name in ("base-model", "no-such-model"):
        body = {"model": name, "messages": MESSAGES}
        error = assert_error(post(gateway, key, body), 404, "model_not_found")
        assert error["param"] == "model"
    assert not engine.requests
    denied = AuditEvent.objects.filter(action="inference", outcome="denied")
    assert [e.details["model"] for e in denied.order_by("seq")] == ["base-model", "no-such-model"]


def test_a_grant_withdrawn_refuses_the_model_on_the_next_request(
    gateway: Any, ready: Any, admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    app, key, _ = ready
    assert post(gateway, key).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        access.grant_delete(actor=actor(admin), grant=app.grants.get())
    assert_error(post(gateway, key), 404, "model_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "base-model"}, "messages"),
        ({"model": "base-model", "messages": []}, "messages"),
        ({"model": "base-model", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "base-model", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ([1, 2], None),
    ],
)
def test_a_malformed_body_is_422(gateway: Any, ready: Any, body: Any, param: str | None) -> None:
    error = assert_error(post(gateway, ready[1], body), 422, error_code(body))
    assert error["param"] == param
    assert not ready[2].requests


def error_code(body: Any) -> str:
    return "invalid_body" if isinstance(body, list) else "invalid_value"


def test_not_json_is_400_and_another_content_type_is_415(gateway: Any, ready: Any) -> None:
    _, key, _ = ready
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{gateway.url}/chat/completions"
    broken, form = gateway.run(
        lambda: (
            httpx.post(
                url, content=b"{nope", headers={**headers, "Content-Type": "application/json"}
            ),
            httpx.post(url, data={"model": "base-model"}, headers=headers),
        )
    )
    assert_error(broken, 400, "invalid_json")
    assert_error(form, 415, "unsupported_media_type")


def test_a_body_over_the_limit_is_413(gateway: Any, ready: Any, settings: Any) -> None:
    settings.APPLIANCE_GATEWAY_MAX_BODY_BYTES = 2048
    body = {"model": "base-model", "messages": [{"role": "user", "content": "x" * 4096}]}
    assert_error(post(gateway, ready[1], body), 413, "request_too_large")


def test_a_wrong_method_and_an_unknown_path_answer_in_openai_shape(
    gateway: Any, ready: Any
) -> None:
    headers = {"Authorization": f"Bearer {ready[1]}"}
    wrong_method, unknown = gateway.run(
        lambda: (
            httpx.get(f"{gateway.url}/chat/completions", headers=headers),
            httpx.get(f"{gateway.url}/assistants", headers=headers),
        )
    )
    assert_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "POST"
    assert_error(unknown, 404, "unknown_url")
    bare, unknown_post = gateway.run(
        lambda: (
            httpx.get(gateway.url, headers=headers),
            httpx.post(f"{gateway.url}/responses", json={}, headers=headers),
        )
    )
    assert_error(bare, 404, "unknown_url")
    assert_error(unknown_post, 404, "unknown_url")


def test_no_ready_engine_is_503_with_the_reason(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    _, key = application(grants=[approved_model])
    error = assert_error(post(gateway, key), 503, "no_healthy_engine")
    assert "no deployment serves it" in error["message"]

    serve(approved_model, [fake_engines()])
    EngineInstance.objects.update(state=EngineState.STARTING)
    error = assert_error(post(gateway, key), 503, "no_healthy_engine")
    assert "1 starting" in error["message"]
    assert UsageRecord.objects.filter(status=503).count() == 2


def test_an_engine_error_is_passed_through_and_recorded(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    serve(approved_model, [fake_engines(status=400)])
    _, key = application(grants=[approved_model])
    client = gateway.client(key)
    with pytest.raises(openai.BadRequestError):
        gateway.run(lambda: client.chat.completions.create(model="base-model", messages=MESSAGES))
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == (400, "engine_400")
    assert AuditEvent.objects.get(action="inference").outcome == "failure"
