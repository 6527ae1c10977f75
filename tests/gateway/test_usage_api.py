"""GET /api/v1/usage and /usage/records: per application, model and day; owners see their own."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from appliance.gateway.usage import usage_rollup
from tests.conftest import make_user
from tests.gateway.test_usage_rollup import NOW, record


def test_usage_per_application_model_and_day(
    api_as: Any, admin: Any, application: Any, app_owner: Any
) -> None:
    mine, _ = application()
    theirs, _ = application(name="fraud-screen")
    theirs.owner = make_user("oscar", "app_owner")
    theirs.save()
    for app in (mine, theirs):
        record(app, 5, ttft=30.0, latency=200.0)
        record(app, 65)
    usage_rollup(now=NOW)

    everything = api_as(admin).get("/usage?period=day").data["items"]
    assert sorted((r["application"], r["requests"], r["total_tokens"]) for r in everything) == [
        ("discharge-letters", 2, 30),
        ("fraud-screen", 2, 30),
    ]
    hours = api_as(app_owner).get("/usage?period=hour").data["items"]
    assert [(r["application"], r["start"][:13], r["requests"]) for r in hours] == [
        ("discharge-letters", "2026-11-23T09", 1),
        ("discharge-letters", "2026-11-23T10", 1),
    ]
    assert hours[1]["ttft_ms_avg"] == 30.0 and hours[1]["latency_ms_avg"] == 200.0


def test_records_newest_first_and_only_the_owners_own(
    api_as: Any, application: Any, app_owner: Any, auditor: Any
) -> None:
    mine, _ = application()
    theirs, _ = application(name="fraud-screen")
    theirs.owner = make_user("oscar", "app_owner")
    theirs.save()
    record(mine, 10)
    record(mine, 1, status=429)
    record(theirs, 2)

    own = api_as(app_owner).get("/usage/records").data["results"]
    assert [(r["application"], r["status"]) for r in own] == [
        ("discharge-letters", 429),
        ("discharge-letters", 200),
    ]
    assert own[0]["api_key_prefix"] == mine.keys.get().prefix
    assert len(api_as(auditor).get("/usage/records").data["results"]) == 3
    since = (NOW - timedelta(minutes=3)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    recent = api_as(auditor).get(f"/usage/records?since={since}").data["results"]
    assert len(recent) == 2


def test_someone_elses_application_filter_shows_nothing(
    api_as: Any, application: Any, app_owner: Any
) -> None:
    theirs, _ = application(name="fraud-screen")
    theirs.owner = make_user("oscar", "app_owner")
    theirs.save()
    record(theirs, 1)
    usage_rollup(now=NOW)
    client = api_as(app_owner)
    assert client.get(f"/usage?application_id={theirs.pk}").data["items"] == []
    assert client.get(f"/usage/records?application_id={theirs.pk}").data["results"] == []


def test_a_bad_period_is_422(api_as: Any, admin: Any) -> None:
    response = api_as(admin).get("/usage?period=week")
    assert response.status_code == 422
