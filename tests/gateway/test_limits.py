"""Application limits: 429 with Retry-After, counted in Redis when it is configured and in the
process when it is not or when it stops answering."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from appliance.core import redis as shared_redis
from appliance.gateway import handler
from appliance.gateway.models import UsageRecord
from tests.gateway.test_errors import assert_error, post

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
MESSAGES = [{"role": "user", "content": "hello"}]


def early_in_a_minute() -> None:
    """Limits count in fixed UTC minutes: start a per-minute test where a minute cannot turn
    under it."""
    into = time.time() % 60
    if into > 45:
        time.sleep(60.5 - into)


def use_counters(settings: Any, kind: str) -> str:
    settings.REDIS_URL = REDIS_URL if kind == "redis" else ""
    shared_redis.reset()
    if kind == "redis":
        client = shared_redis.sync_client()
        for key in client.scan_iter("appliance:*"):
            client.delete(key)
    return kind


@pytest.fixture(params=["in-process", "redis"])
def counters(request: Any, settings: Any) -> str:
    """Every limit test runs on both kinds of counter."""
    return use_counters(settings, request.param)


@pytest.fixture
def limited(application: Any, approved_model: Any, serve: Any, fake_engines: Any) -> Any:
    """``limited(**limits)`` → a key of an application with these limits and a ready engine."""
    engine = fake_engines()
    serve(approved_model, [engine])

    def build(**limits: Any) -> str:
        _, key = application(grants=[approved_model], **limits)
        return key

    build.engine = engine  # type: ignore[attr-defined]
    return build


def test_requests_per_minute_answer_429_with_retry_after(
    gateway: Any, limited: Any, counters: str
) -> None:
    early_in_a_minute()
    key = limited(requests_per_minute=2)
    statuses = [post(gateway, key) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert_error(statuses[2], 429, "requests_per_minute")
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 60
    assert UsageRecord.objects.filter(status=429, error_code="requests_per_minute").count() == 1


def test_the_openai_client_sees_a_rate_limit_error(
    gateway: Any, limited: Any, counters: str
) -> None:
    early_in_a_minute()
    client = gateway.client(limited(requests_per_minute=1))

    def twice() -> None:
        client.chat.completions.create(model="base-model", messages=MESSAGES)
        client.chat.completions.create(model="base-model", messages=MESSAGES)

    with pytest.raises(openai.RateLimitError):
        gateway.run(twice)


def test_tokens_per_minute_count_what_was_used(gateway: Any, limited: Any, counters: str) -> None:
    early_in_a_minute()
    key = limited(tokens_per_minute=15)  # each answer uses 7 + 3 tokens
    statuses = [post(gateway, key).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_monthly_budget_counts_earlier_usage_and_says_when_it_renews(
    gateway: Any, limited: Any, counters: str
) -> None:
    key = limited(monthly_token_budget=25)
    app = UsageRecord._meta.get_field("application").related_model.objects.get()
    UsageRecord.objects.create(  # used earlier this month, before this process counted anything
        time=timezone.now(),
        application=app,
        api_key=app.keys.get(),
        endpoint="chat.completions",
        model="base-model",
        status=200,
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=1,
    )
    first, second = post(gateway, key), post(gateway, key)
    assert first.status_code == 200
    error = assert_error(second, 429, "budget_exceeded")
    assert error["type"] == "insufficient_quota"
    now = datetime.now(UTC)
    renews = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    assert abs(int(second.headers["Retry-After"]) - (renews - now).total_seconds()) < 5


def test_concurrent_requests_beyond_the_limit_are_refused(
    gateway: Any,
    application: Any,
    approved_model: Any,
    serve: Any,
    fake_engines: Any,
    counters: str,
) -> None:
    engine = fake_engines(hold=True)
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model], max_concurrent_requests=1)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "base-model", "messages": MESSAGES, "stream": True}
    url = f"{gateway.url}/chat/completions"

    def scenario() -> tuple[int, int, int]:
        with httpx.stream("POST", url, json=body, headers=headers) as held:
            lines = held.iter_lines()  # kept: dropping the iterator closes the connection
            next(lines)  # the first chunk: this request is in progress
            second = httpx.post(url, json=body, headers=headers)
        engine.disconnected.wait(5)
        engine.hold = False
        third = httpx.post(url, json=body, headers=headers)
        return held.status_code, second.status_code, third.status_code

    assert gateway.run(scenario) == (200, 429, 200)


def test_max_tokens_over_the_cap_is_422_and_a_missing_one_is_capped(
    gateway: Any, limited: Any
) -> None:
    key = limited(max_tokens_per_request=32)
    body = {"model": "base-model", "messages": MESSAGES, "max_tokens": 33}
    assert_error(post(gateway, key, body), 422, "max_tokens_exceeded")
    assert post(gateway, key).status_code == 200
    assert limited.engine.requests[-1]["body"]["max_tokens"] == 32
    several = {"model": "base-model", "messages": MESSAGES, "max_tokens": 20, "n": 2}
    assert_error(post(gateway, key, several), 422, "max_tokens_exceeded")
    assert post(gateway, key, {**several, "max_tokens": None, "n": 4}).status_code == 200
    assert limited.engine.requests[-1]["body"]["max_tokens"] == 8  # 32 tokens over 4 choices


def test_limits_hold_per_process_when_redis_is_down(
    gateway: Any, limited: Any, settings: Any, caplog: Any
) -> None:
    early_in_a_minute()
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    shared_redis.reset()
    key = limited(requests_per_minute=2)
    statuses = [post(gateway, key).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert "Redis unreachable" in caplog.text


def test_a_redis_counter_is_shared_by_every_gateway_process(
    gateway: Any, limited: Any, settings: Any
) -> None:
    early_in_a_minute()
    use_counters(settings, "redis")
    key = limited(requests_per_minute=2)
    assert post(gateway, key).status_code == 200
    handler.limiter.local.__init__()  # type: ignore[misc]  # as if another process answered next
    assert post(gateway, key).status_code == 200
    assert post(gateway, key).status_code == 429
