"""Privacy fixtures: the gateway's (real ASGI app, fake engines), an application whose content is
kept, a way to store content without the gateway, and master keys to rotate between."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.utils import timezone

from appliance.access.choices import DataPolicy
from appliance.access.models import Application
from appliance.core.crypto import encode_key, master_keys
from appliance.gateway.models import UsageRecord
from appliance.privacy.capture import capture_open
from appliance.privacy.models import StoredContent
from tests.gateway.conftest import (  # noqa: F401
    _fresh_gateway_state,
    application,
    approved_model,
    enroll,
    fake_engines,
    gateway,
    oscar,
    serve,
)

CANARY = "Canary-7f3c: patient Jane Roe, MRN 0042, suspected pulmonary embolism"
MESSAGES = [{"role": "user", "content": CANARY}]
SUBJECT = "MRN-0042"


def store_exchange(
    app: Application,
    *,
    request_id: str,
    subject: str | None = SUBJECT,
    prompt: Any = None,
    completions: list[str] | None = None,
) -> UsageRecord:
    """What the gateway writes for one kept request (its usage record and sealed content),
    without a gateway."""
    record = UsageRecord.objects.create(
        time=timezone.now(),
        request_id=request_id,
        application=app,
        api_key=app.keys.first(),
        endpoint="chat.completions",
        model="base-model",
        status=200,
        latency_ms=1.0,
    )
    capture = capture_open(
        application_id=app.pk,
        request_id=request_id,
        subject=subject,
        prompt=MESSAGES if prompt is None else prompt,
    )
    capture.seal_completion(["ok ok ok "] if completions is None else completions)
    StoredContent.objects.bulk_create(capture.rows(record))
    return record


@pytest.fixture
def app(application: Any) -> Application:  # noqa: F811
    """owen's application, with a key (content is put there with ``store_exchange``)."""
    created, _ = application()
    return created  # type: ignore[no-any-return]


@pytest.fixture
def keeping(application: Any, approved_model: Any) -> tuple[Application, str]:  # noqa: F811
    """owen's application, granted the model, whose content is kept encrypted, and its key."""
    return application(grants=[approved_model], data_policy=DataPolicy.KEEP_ENCRYPTED)


@pytest.fixture
def engine(approved_model: Any, serve: Any, fake_engines: Any) -> Any:  # noqa: F811
    started = fake_engines()
    serve(approved_model, [started])
    return started


def post(
    server: Any,
    key: str,
    body: Any = None,
    *,
    path: str = "/chat/completions",
    headers: dict[str, Any] | None = None,
) -> httpx.Response:
    """A raw request through the gateway (the body is a chat request unless given)."""
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    if body is None:
        body = {"model": "base-model", "messages": MESSAGES}
    return server.run(lambda: httpx.post(f"{server.url}{path}", json=body, headers=sent))


def stream_lines(server: Any, key: str, body: dict[str, Any], **headers: str) -> list[str]:
    """The SSE data payloads of a streamed request."""

    def read() -> list[str]:
        with httpx.stream(
            "POST",
            f"{server.url}/chat/completions" if "messages" in body else f"{server.url}/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {key}", **headers},
        ) as response:
            assert response.status_code == 200, response.read()
            return [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]

    return server.run(read)


def chunks_text(payloads: list[str]) -> str:
    text = ""
    for payload in payloads:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload).get("choices", []):
            text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return text


@pytest.fixture
def use_master_keys(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``use_master_keys(current, *previous)``: configure the master keys by environment, as an
    operator would, and drop the cached ones."""

    def configure(current: bytes, *previous: bytes) -> None:
        monkeypatch.delenv("APPLIANCE_MASTER_KEY_FILE", raising=False)
        monkeypatch.setenv("APPLIANCE_MASTER_KEY", encode_key(current))
        if previous:
            monkeypatch.setenv(
                "APPLIANCE_MASTER_KEY_PREVIOUS", ",".join(encode_key(k) for k in previous)
            )
        else:
            monkeypatch.delenv("APPLIANCE_MASTER_KEY_PREVIOUS", raising=False)
        master_keys.cache_clear()

    return configure
