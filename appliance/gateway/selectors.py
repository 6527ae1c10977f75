"""Reading usage: every application's for those who see all applications, an owner's own only."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from django.db.models import Model, QuerySet

from appliance.access.selectors import application_list
from appliance.core.actors import Actor
from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRecord, UsageRollup

M = TypeVar("M", bound=Model)


def _visible(
    queryset: QuerySet[M],
    *,
    actor: Actor,
    time_field: str,
    since: datetime | None,
    until: datetime | None,
    **exact: object,
) -> QuerySet[M]:
    """Rows of the applications the actor may see, in [since, until), matching the filters given
    (None: not filtered)."""
    rows = queryset.filter(application__in=application_list(actor=actor).order_by())
    if since:
        rows = rows.filter(**{f"{time_field}__gte": since})
    if until:
        rows = rows.filter(**{f"{time_field}__lt": until})
    return rows.filter(**{name: value for name, value in exact.items() if value is not None})


def usage_rollup_list(
    *,
    actor: Actor,
    period: str = UsagePeriod.DAY,
    since: datetime | None = None,
    until: datetime | None = None,
    application_id: int | None = None,
    model: str | None = None,
    adapter: str | None = None,
    route: str | None = None,
    task_class: str | None = None,
) -> QuerySet[UsageRollup]:
    """Hourly or daily usage per application, model and adapter, oldest bucket first."""
    rollups = _visible(
        UsageRollup.objects.select_related("application"),
        actor=actor,
        time_field="start",
        since=since,
        until=until,
        period=period,
        application_id=application_id,
        model=model,
        adapter=adapter,
        route=route,
        task_class=task_class,
    )
    return rollups.order_by("start", "application__name", "model", "adapter", "id")


def usage_record_list(
    *,
    actor: Actor,
    since: datetime | None = None,
    until: datetime | None = None,
    application_id: int | None = None,
    model: str | None = None,
    status: int | None = None,
    route: str | None = None,
    task_class: str | None = None,
) -> QuerySet[UsageRecord]:
    """Single requests, newest first."""
    records = _visible(
        UsageRecord.objects.select_related("application", "api_key"),
        actor=actor,
        time_field="time",
        since=since,
        until=until,
        application_id=application_id,
        model=model,
        status=status,
        route=route,
        task_class=task_class,
    )
    return records.order_by("-time", "-id")
