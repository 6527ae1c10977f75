"""Breach records (GDPR Art. 33) and the "who accessed what, when" report an investigation needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import DataCategory
from appliance.audit.models import AuditEvent, BreachRecord
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.errors import Conflict, ValidationFailed
from appliance.core.times import refuse_naive

NOTIFY_WITHIN = timedelta(hours=72)
MAX_REPORT_ROWS = 10_000


def breach_deadline(aware_at: datetime) -> datetime:
    """Art. 33(1): notify the supervisory authority within 72 hours of becoming aware."""
    return aware_at + NOTIFY_WITHIN


def breach_record(
    *,
    actor: Actor,
    title: str,
    description: str,
    aware_at: datetime,
    categories: list[str],
    subjects_estimate: int | None = None,
    measures: str = "",
) -> BreachRecord:
    """Record a breach as soon as someone is aware of it; the deadline follows from ``aware_at``."""
    require(actor, Capability.PRIVACY_MANAGE)
    refuse_naive(aware_at=aware_at)
    errors: dict[str, list[str]] = {}
    if not title.strip():
        errors["title"] = ["Required."]
    if not description.strip():
        errors["description"] = ["Say what happened, as far as it is known."]
    if aware_at > timezone.now() + timedelta(minutes=5):
        errors["aware_at"] = ["Cannot be in the future."]
    unknown = sorted(set(categories) - set(DataCategory.values))
    if unknown:
        errors["categories"] = [f"Unknown: {', '.join(unknown)}."]
    if errors:
        raise ValidationFailed("The breach record is incomplete.", fields=errors)
    with transaction.atomic():
        breach = BreachRecord.objects.create(
            title=title.strip()[:200],
            description=description.strip(),
            aware_at=aware_at,
            deadline=breach_deadline(aware_at),
            categories=sorted(set(categories)),
            subjects_estimate=subjects_estimate,
            measures=measures.strip(),
            recorded_by=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="breach.record",
            object_type="breach",
            object_id=breach.pk,
            details={
                "aware_at": aware_at.isoformat(),
                "deadline": breach.deadline.isoformat(),
                "categories": breach.categories,
            },
        )
    return breach


def breach_reported(
    *, actor: Actor, breach: BreachRecord, reported_at: datetime, delay_reason: str = ""
) -> BreachRecord:
    """Note when the authority was told; after the deadline a reason for the delay is required."""
    require(actor, Capability.PRIVACY_MANAGE)
    refuse_naive(reported_at=reported_at)
    with transaction.atomic():
        breach = BreachRecord.objects.select_for_update().get(pk=breach.pk)  # one report wins
        if breach.reported_at is not None:
            raise Conflict("This breach is already recorded as reported.")
        late = reported_at > breach.deadline
        if late and not delay_reason.strip():
            raise ValidationFailed(
                "Reported after the 72-hour deadline: Art. 33(1) needs the reasons for the delay.",
                fields={"delay_reason": ["Required when reporting after the deadline."]},
            )
        if reported_at < breach.aware_at:
            raise ValidationFailed(
                "Reported before anyone was aware?", fields={"reported_at": ["Before aware_at."]}
            )
        breach.reported_at = reported_at
        breach.delay_reason = delay_reason.strip()
        breach.save(update_fields=["reported_at", "delay_reason"])
        audit_record(
            actor=actor,
            action="breach.report",
            object_type="breach",
            object_id=breach.pk,
            details={"reported_at": reported_at.isoformat(), "late": late},
        )
    return breach


@dataclass(frozen=True)
class AccessRow:
    """One principal's use of one object in the window."""

    actor_kind: str
    actor_id: str
    actor_label: str
    action: str
    object_type: str
    object_id: str
    count: int
    first: datetime
    last: datetime


def access_report(
    *,
    actor: Actor,
    since: datetime,
    until: datetime,
    object_type: str | None = None,
    object_id: str | None = None,
    actor_kind: str | None = None,
    actor_id: str | None = None,
) -> list[AccessRow]:
    """Who did what to which object between ``since`` and ``until``, from the audit log."""
    require(actor, Capability.AUDIT_VIEW)
    refuse_naive(since=since, until=until)
    if since >= until:
        raise ValidationFailed("The window is empty.", fields={"until": ["Must be after since."]})
    events = AuditEvent.objects.filter(time__gte=since, time__lt=until)
    wanted = {
        "object_type": object_type,
        "object_id": object_id,
        "actor_kind": actor_kind,
        "actor_id": actor_id,
    }
    events = events.filter(**{k: v for k, v in wanted.items() if v})
    keys = ("actor_kind", "actor_id", "actor_label", "action", "object_type", "object_id")
    rows = (
        events.values(*keys)
        .annotate(count=Count("seq"), first=Min("time"), last=Max("time"))
        .order_by("actor_kind", "actor_id", "object_type", "object_id", "action")
    )
    return [AccessRow(**row) for row in rows[:MAX_REPORT_ROWS]]
