"""Reading usage: every application's for those who see all applications, an owner's own only."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from appliance.access.selectors import application_list
from appliance.core.actors import Actor
from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRecord, UsageRollup


def usage_rollup_list(
    *,
    actor: Actor,
    period: str = UsagePeriod.DAY,
    since: datetime | None = None,
    until: datetime | None = None,
    application_id: int | None = None,
    model: str | None = None,
    adapter: str | None = None,
) -> QuerySet[UsageRollup]:
    """Hourly or daily usage per application, model and adapter, oldest bucket first."""
    rollups = UsageRollup.objects.filter(
        period=period, application__in=application_list(actor=actor).order_by()
    ).select_related("application")
    if since:
        rollups = rollups.filter(start__gte=since)
    if until:
        rollups = rollups.filter(start__lt=until)
    if application_id:
        rollups = rollups.filter(application_id=application_id)
    if model:
        rollups = rollups.filter(model=model)
    if adapter is not None:
        rollups = rollups.filter(adapter=adapter)
    return rollups.order_by("start", "application__name", "model", "adapter", "id")


def usage_record_list(
    *,
    actor: Actor,
    since: datetime | None = None,
    until: datetime | None = None,
    application_id: int | None = None,
    model: str | None = None,
    status: int | None = None,
) -> QuerySet[UsageRecord]:
    """Single requests, newest first."""
    records = UsageRecord.objects.filter(
        application__in=application_list(actor=actor).order_by()
    ).select_related("application", "api_key")
    if since:
        records = records.filter(time__gte=since)
    if until:
        records = records.filter(time__lt=until)
    if application_id:
        records = records.filter(application_id=application_id)
    if model:
        records = records.filter(model=model)
    if status:
        records = records.filter(status=status)
    return records.order_by("-time", "-id")
