"""Retention per category, floors, legal holds and the purge job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.audit.choices import DataCategory
from appliance.audit.models import AuditEvent, LegalHold
from appliance.audit.retention import (
    FLOORS,
    SIX_YEARS,
    legal_hold_place,
    legal_hold_release,
    retention_list,
    retention_purge,
    retention_set,
)
from appliance.audit.services import audit_record
from appliance.core.actors import system_actor
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from appliance.fleet.models import GpuSample
from appliance.gateway.models import UsageRecord
from appliance.privacy.models import StoredContent
from tests.conftest import actor
from tests.fleet.test_telemetry import make_gpu
from tests.privacy.conftest import store_exchange

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def apps(admin: User, app_owner: User) -> tuple[Application, Application]:
    made = []
    for name in ("radiology-reports", "billing-codes"):
        app = access.application_create(actor=actor(admin), name=name, owner=app_owner)
        access.api_key_create(actor=actor(admin), application=app, name="k")
        made.append(app)
    return made[0], made[1]


def usage(app: Application, days_ago: float) -> UsageRecord:
    return UsageRecord.objects.create(
        time=NOW - timedelta(days=days_ago),
        application=app,
        api_key=app.keys.get(),
        endpoint="chat.completions",
        model="m",
        status=200,
        latency_ms=10.0,
    )


def purge(admin: User) -> dict[str, Any]:
    return retention_purge(actor=actor(admin), now=lambda: NOW)


def test_defaults_keep_audit_six_years_and_content_shorter_than_usage() -> None:
    kept = {r.category: r for r in retention_list()}
    assert kept[DataCategory.AUDIT].days == SIX_YEARS == kept[DataCategory.AUDIT].floor
    assert kept[DataCategory.AUDIT].purged is False
    assert kept[DataCategory.CONTENT].days < kept[DataCategory.USAGE].days


@pytest.mark.parametrize("category", DataCategory.values)
def test_a_policy_below_the_floor_is_refused_and_changes_nothing(
    admin: User, category: str
) -> None:
    before = retention_list()
    with pytest.raises(ValidationFailed, match=f"at least {FLOORS[DataCategory(category)]} days"):
        retention_set(
            actor=actor(admin), category=category, days=FLOORS[DataCategory(category)] - 1
        )
    assert retention_list() == before
    assert not AuditEvent.objects.filter(action="retention.set").exists()


def test_setting_retention_is_audited_with_before_and_after(admin: User) -> None:
    retention_set(actor=actor(admin), category=DataCategory.USAGE, days=200)
    event = AuditEvent.objects.get(action="retention.set")
    assert (event.object_id, event.details) == ("usage", {"before": 400, "after": 200})
    assert {r.category: r.days for r in retention_list()}[DataCategory.USAGE] == 200


def test_only_admins_set_retention_or_place_holds(auditor: User, operator: User) -> None:
    for user in (auditor, operator):
        with pytest.raises(PermissionDenied):
            retention_set(actor=actor(user), category=DataCategory.USAGE, days=300)
        with pytest.raises(PermissionDenied):
            legal_hold_place(actor=actor(user), name="x", reason="y")


def test_purge_removes_only_what_is_past_retention_and_records_counts(
    admin: User, apps: tuple[Application, Application]
) -> None:
    radiology, _ = apps
    old, fresh = usage(radiology, 401), usage(radiology, 399)
    gpu = make_gpu()
    GpuSample.objects.create(gpu=gpu, resolution="hour", time=NOW - timedelta(days=500))
    kept_sample = GpuSample.objects.create(gpu=gpu, resolution="hour", time=NOW - timedelta(days=3))
    audit_record(actor=system_actor(), action="test.ancient")
    removed = purge(admin)
    assert list(UsageRecord.objects.all()) == [fresh]
    assert not UsageRecord.objects.filter(pk=old.pk).exists()
    assert list(GpuSample.objects.all()) == [kept_sample]
    assert removed["usage"]["deleted"] == 1 and removed["gpu_samples"]["deleted"] == 1
    event = AuditEvent.objects.get(action="retention.purge")
    assert event.details["removed"]["usage"]["deleted"] == 1
    assert AuditEvent.objects.filter(action="test.ancient").exists()  # audit is never purged


def test_a_legal_hold_keeps_its_application_and_window_until_released(
    admin: User, apps: tuple[Application, Application]
) -> None:
    radiology, billing = apps
    held = usage(radiology, 500)
    outside_window = usage(radiology, 900)
    other_app = usage(billing, 500)
    hold = legal_hold_place(
        actor=actor(admin),
        name="Case 2026-114",
        reason="Litigation hold requested by counsel",
        application=radiology,
        starts_at=NOW - timedelta(days=600),
        ends_at=NOW - timedelta(days=400),
    )
    purge(admin)
    assert list(UsageRecord.objects.all()) == [held]
    assert not UsageRecord.objects.filter(pk__in=[outside_window.pk, other_app.pk]).exists()
    legal_hold_release(actor=actor(admin), hold=hold)
    purge(admin)
    assert not UsageRecord.objects.exists()
    actions = list(
        AuditEvent.objects.filter(action__startswith="legal_hold.").values_list("action", flat=True)
    )
    assert actions == ["legal_hold.place", "legal_hold.release"]


def test_a_hold_without_scope_keeps_everything(
    admin: User, apps: tuple[Application, Application]
) -> None:
    radiology, billing = apps
    records = [usage(radiology, 1000), usage(billing, 2000)]
    legal_hold_place(actor=actor(admin), name="Regulator inquiry", reason="All records frozen")
    purge(admin)
    assert set(UsageRecord.objects.all()) == set(records)


def test_incomplete_holds_are_refused_with_field_errors(admin: User) -> None:
    with pytest.raises(ValidationFailed) as refused:
        legal_hold_place(
            actor=actor(admin),
            name=" ",
            reason="",
            starts_at=NOW,
            ends_at=NOW - timedelta(days=1),
        )
    assert set(refused.value.fields) == {"name", "reason", "ends_at"}
    assert not LegalHold.objects.exists()


def test_releasing_twice_is_a_conflict(admin: User) -> None:
    hold = legal_hold_place(actor=actor(admin), name="h", reason="r")
    legal_hold_release(actor=actor(admin), hold=hold)
    with pytest.raises(Conflict):
        legal_hold_release(actor=actor(admin), hold=hold)


def test_retention_api_refuses_below_the_floor_with_the_error_format(
    api_as: Any, admin: User, auditor: User
) -> None:
    response = api_as(admin).call("put", "/compliance/retention/audit", {"days": 365})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "days" in response.json()["fields"]
    listed = api_as(auditor).get("/compliance/retention").json()
    assert {"category": "audit", "days": SIX_YEARS, "floor": SIX_YEARS, "purged": False} in listed
    assert (
        api_as(auditor).call("put", "/compliance/retention/usage", {"days": 300}).status_code == 403
    )
    assert api_as(admin).call("put", "/compliance/retention/nope", {"days": 300}).status_code == 404


def test_kept_content_is_purged_after_its_own_shorter_retention_unless_held(
    admin: User, apps: tuple[Application, Application]
) -> None:
    radiology, billing = apps
    for app, request_id in ((radiology, "req-held"), (billing, "req-old")):
        store_exchange(app, request_id=request_id)
    created = timezone.now() - timedelta(days=31)
    StoredContent.objects.update(created_at=created)
    store_exchange(billing, request_id="req-fresh")
    legal_hold_place(actor=actor(admin), name="h", reason="r", application=radiology)
    removed = retention_purge(actor=actor(admin))
    kept = set(StoredContent.objects.values_list("request_id", flat=True))
    assert kept == {"req-held", "req-fresh"}
    assert removed["content"]["deleted"] == 2  # the old billing prompt and its completion
    assert UsageRecord.objects.filter(request_id="req-old").exists()  # usage keeps its own time
