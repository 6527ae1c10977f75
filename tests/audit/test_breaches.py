"""Breach records (GDPR Art. 33): the 72-hour deadline, late reports, and the access report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from appliance.accounts.models import User
from appliance.audit.breaches import access_report, breach_record, breach_reported
from appliance.audit.models import AuditEvent, BreachRecord
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, ActorKind
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from tests.conftest import actor

pytestmark = pytest.mark.django_db

AWARE = datetime(2026, 3, 28, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # DST starts next night


def record(admin: User, **changes: Any) -> BreachRecord:
    fields: dict[str, Any] = {
        "title": "Laptop with exported usage report stolen",
        "description": "An operator's laptop holding a CSV export was stolen from a car.",
        "aware_at": AWARE,
        "categories": ["usage"],
        "subjects_estimate": 120,
    } | changes
    return breach_record(actor=actor(admin), **fields)


def test_deadline_is_exactly_72_hours_after_awareness_whatever_the_clock_change(
    admin: User,
) -> None:
    breach = record(admin)
    assert breach.deadline - breach.aware_at == timedelta(hours=72)
    assert breach.deadline == datetime(2026, 3, 31, 7, 30, tzinfo=UTC)
    event = AuditEvent.objects.get(action="breach.record")
    assert event.details["deadline"] == breach.deadline.isoformat()


def test_a_report_in_time_needs_no_reason(admin: User) -> None:
    breach = record(admin)
    breach_reported(actor=actor(admin), breach=breach, reported_at=breach.deadline)
    assert AuditEvent.objects.get(action="breach.report").details["late"] is False


def test_a_late_report_needs_the_reasons_for_the_delay(admin: User) -> None:
    breach = record(admin)
    late = breach.deadline + timedelta(minutes=1)
    with pytest.raises(ValidationFailed, match="72-hour deadline") as refused:
        breach_reported(actor=actor(admin), breach=breach, reported_at=late)
    assert "delay_reason" in refused.value.fields
    breach.refresh_from_db()
    assert breach.reported_at is None
    breach_reported(
        actor=actor(admin), breach=breach, reported_at=late, delay_reason="Forensics took a day."
    )
    assert AuditEvent.objects.get(action="breach.report").details["late"] is True
    with pytest.raises(Conflict):
        breach_reported(actor=actor(admin), breach=breach, reported_at=late, delay_reason="x")


def test_incomplete_or_impossible_records_are_refused(admin: User) -> None:
    with pytest.raises(ValidationFailed) as refused:
        record(
            admin,
            title="",
            description=" ",
            aware_at=timezone.now() + timedelta(days=1),
            categories=["usage", "weather"],
        )
    assert set(refused.value.fields) == {"title", "description", "aware_at", "categories"}
    assert not BreachRecord.objects.exists()


def test_only_admins_record_breaches(auditor: User, operator: User) -> None:
    for user in (auditor, operator):
        with pytest.raises(PermissionDenied):
            record(user)


def test_access_report_counts_who_touched_what_inside_the_window_only(auditor: User) -> None:
    nurse_app = Actor(kind=ActorKind.APPLICATION, id="3", label="ward-notes")
    billing = Actor(kind=ActorKind.APPLICATION, id="4", label="billing")
    for who in (nurse_app, nurse_app, billing):
        audit_record(actor=who, action="inference.chat", object_type="model", object_id="triage")
    audit_record(actor=billing, action="inference.chat", object_type="model", object_id="coder")
    events = AuditEvent.objects.all()
    since = min(e.time for e in events)
    until = max(e.time for e in events) + timedelta(microseconds=1)
    rows = access_report(actor=actor(auditor), since=since, until=until, object_type="model")
    counted = {(r.actor_label, r.object_id): r.count for r in rows}
    assert counted == {
        ("ward-notes", "triage"): 2,
        ("billing", "triage"): 1,
        ("billing", "coder"): 1,
    }
    only_triage = access_report(
        actor=actor(auditor), since=since, until=until, object_type="model", object_id="triage"
    )
    assert {r.actor_label for r in only_triage} == {"ward-notes", "billing"}
    later = access_report(actor=actor(auditor), since=until, until=until + timedelta(hours=1))
    assert later == []


def test_breach_api_returns_the_deadline_and_refuses_unknown_fields(
    api_as: Any, admin: User, auditor: User
) -> None:
    body = {
        "title": "Misdirected export",
        "description": "An export was e-mailed to the wrong team.",
        "aware_at": "2026-11-30T10:00:00Z",
        "categories": ["audit"],
    }
    created = api_as(admin).post("/compliance/breaches", body)
    assert created.status_code == 201, created.data
    assert created.data["deadline"].startswith("2026-12-03T10:00:00")
    assert api_as(admin).post("/compliance/breaches", body | {"owner": 1}).status_code == 422
    assert api_as(auditor).post("/compliance/breaches", body).status_code == 403
    assert [b["id"] for b in api_as(auditor).get("/compliance/breaches").data] == [
        created.data["id"]
    ]
    report = api_as(auditor).get(
        "/compliance/access-report?since=2026-11-30T00:00:00Z&until=2026-11-29T00:00:00Z"
    )
    assert report.status_code == 422


def test_times_without_a_zone_are_refused_not_guessed(api_as: Any, admin: User) -> None:
    body = {
        "title": "Misdirected export",
        "description": "An export was e-mailed to the wrong team.",
        "aware_at": "2026-11-30T10:00:00",
    }
    assert api_as(admin).post("/compliance/breaches", body).status_code == 422
    with pytest.raises(ValidationFailed, match="zone"):
        record(admin, aware_at=datetime(2026, 11, 30, 10, 0))
    report = api_as(admin).get(
        "/compliance/access-report?since=2026-11-29T00:00:00&until=2026-11-30T00:00:00Z"
    )
    assert report.status_code == 422
    assert not BreachRecord.objects.exists()
