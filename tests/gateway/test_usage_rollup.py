"""Hourly and daily usage rollups, recomputed from the usage records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.gateway.models import UsageRecord, UsageRollup
from appliance.gateway.tasks import rollup_usage
from appliance.gateway.usage import usage_rollup

NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


def record(app: Any, minutes_ago: int, status: int = 200, adapter: str = "", **fields: Any) -> None:
    UsageRecord.objects.create(
        time=NOW - timedelta(minutes=minutes_ago),
        application=app,
        api_key=app.keys.get(),
        endpoint="chat.completions",
        model="base-model",
        adapter=adapter,
        status=status,
        prompt_tokens=fields.get("prompt", 10),
        completion_tokens=fields.get("completion", 5),
        latency_ms=fields.get("latency", 100.0),
        ttft_ms=fields.get("ttft"),
    )


def test_rollups_sum_per_hour_and_day_and_are_idempotent(application: Any) -> None:
    app, _ = application()
    record(app, 5, ttft=20.0)
    record(app, 10, status=429, prompt=0, completion=0)
    record(app, 50)  # 09:40: the previous hour, same day
    record(app, 5, adapter="triage")

    assert usage_rollup(now=NOW) == {"hour": 3, "day": 2}
    assert usage_rollup(now=NOW) == {"hour": 3, "day": 2}

    hour = UsageRollup.objects.get(period="hour", start=NOW.replace(minute=0), adapter="")
    assert (hour.requests, hour.errors, hour.prompt_tokens, hour.completion_tokens) == (2, 1, 10, 5)
    assert (hour.ttft_ms_sum, hour.ttft_count, hour.latency_ms_sum) == (20.0, 1, 200.0)
    day = UsageRollup.objects.get(period="day", adapter="")
    assert day.start == NOW.replace(hour=0, minute=0)
    assert (day.requests, day.prompt_tokens) == (3, 20)


def test_the_periodic_task_runs_the_rollup(application: Any) -> None:
    app, _ = application()
    UsageRecord.objects.create(
        time=datetime.now(UTC),
        application=app,
        api_key=app.keys.get(),
        endpoint="completions",
        model="base-model",
        status=200,
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=1,
    )
    assert rollup_usage.delay().get() == {"hour": 1, "day": 1}
