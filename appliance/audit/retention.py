"""Retention per data category, legal holds, and the purge job that applies them.

Each category has a floor that no policy may go below (audit events: six years, HIPAA
164.316(b)(2); usage records, the inference log: six months, EU AI Act Art. 19) and a default.
The purge never touches data inside its category's retention or covered by an active legal hold,
and records what it removed as an audit event. Audit events themselves are never purged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from appliance.access.models import Application
from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import DataCategory
from appliance.audit.models import LegalHold, RetentionPolicy
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.errors import Conflict, NotFound, ValidationFailed
from appliance.core.times import refuse_naive

SIX_YEARS = 6 * 365 + 2  # days, counting leap days

FLOORS = {
    DataCategory.CONTENT: 1,
    DataCategory.USAGE: 183,
    DataCategory.GPU_SAMPLES: 1,
    DataCategory.AUDIT: SIX_YEARS,
}
DEFAULTS = {
    DataCategory.CONTENT: 30,
    DataCategory.USAGE: 400,
    DataCategory.GPU_SAMPLES: 400,
    DataCategory.AUDIT: SIX_YEARS,
}
MAX_DAYS = 100 * 365


@dataclass(frozen=True)
class Retention:
    """A category's retention as it applies now."""

    category: str
    days: int
    floor: int
    purged: bool  # False for audit events, which are never deleted


def retention_list() -> list[Retention]:
    """Every category with its current retention (the default until a policy is set)."""
    stored = dict(RetentionPolicy.objects.values_list("category", "days"))
    return [
        Retention(
            category=category,
            days=stored.get(category, DEFAULTS[DataCategory(category)]),
            floor=FLOORS[DataCategory(category)],
            purged=category != DataCategory.AUDIT,
        )
        for category in DataCategory.values
    ]


def retention_days(category: str) -> int:
    return next(r.days for r in retention_list() if r.category == category)


def retention_set(*, actor: Actor, category: str, days: int) -> Retention:
    """Change a category's retention; below the floor is refused with the floor named."""
    require(actor, Capability.PRIVACY_MANAGE)
    if category not in DataCategory.values:
        raise NotFound(f"No data category {category!r}.")
    floor = FLOORS[DataCategory(category)]
    if not floor <= days <= MAX_DAYS:
        raise ValidationFailed(
            f"{category} must be kept at least {floor} days (and at most {MAX_DAYS}).",
            fields={"days": [f"Must be between {floor} and {MAX_DAYS}."]},
        )
    with transaction.atomic():
        before = retention_days(category)
        RetentionPolicy.objects.update_or_create(category=category, defaults={"days": days})
        audit_record(
            actor=actor,
            action="retention.set",
            object_type="retention_policy",
            object_id=category,
            details={"before": before, "after": days},
        )
    return next(r for r in retention_list() if r.category == category)


def legal_hold_place(
    *,
    actor: Actor,
    name: str,
    reason: str,
    application: Application | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> LegalHold:
    """Stop the purge from removing the data in the hold's scope until it is released."""
    require(actor, Capability.PRIVACY_MANAGE)
    refuse_naive(starts_at=starts_at, ends_at=ends_at)
    errors = {}
    if not name.strip():
        errors["name"] = ["Give the hold a name."]
    if not reason.strip():
        errors["reason"] = ["Say why the data must be kept."]
    if starts_at and ends_at and starts_at >= ends_at:
        errors["ends_at"] = ["Must be later than starts_at."]
    if errors:
        raise ValidationFailed("The legal hold is incomplete.", fields=errors)
    with transaction.atomic():
        hold = LegalHold.objects.create(
            name=name.strip()[:100],
            reason=reason.strip(),
            application=application,
            starts_at=starts_at,
            ends_at=ends_at,
            placed_by=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="legal_hold.place",
            object_type="legal_hold",
            object_id=hold.pk,
            details={
                "name": hold.name,
                "application": application.pk if application else None,
                "starts_at": starts_at.isoformat() if starts_at else None,
                "ends_at": ends_at.isoformat() if ends_at else None,
            },
        )
    return hold


def legal_hold_release(*, actor: Actor, hold: LegalHold) -> LegalHold:
    require(actor, Capability.PRIVACY_MANAGE)
    with transaction.atomic():
        hold = LegalHold.objects.select_for_update().get(pk=hold.pk)
        if hold.released_at is not None:
            raise Conflict("This legal hold is already released.")
        hold.released_at = timezone.now()
        hold.released_by = actor.label[:200]
        hold.save(update_fields=["released_at", "released_by"])
        audit_record(
            actor=actor,
            action="legal_hold.release",
            object_type="legal_hold",
            object_id=hold.pk,
            details={"name": hold.name},
        )
    return hold


def legal_hold_covering(
    *, application_id: int, first: datetime | None, last: datetime | None
) -> LegalHold | None:
    """An active hold over any of this application's data created between ``first`` and
    ``last`` (erasure must not destroy what a hold keeps)."""
    holds = LegalHold.objects.filter(released_at__isnull=True).filter(
        Q(application__isnull=True) | Q(application_id=application_id)
    )
    if last is not None:
        holds = holds.filter(Q(starts_at__isnull=True) | Q(starts_at__lte=last))
    if first is not None:
        holds = holds.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=first))
    return holds.order_by("placed_at").first()


def _held(holds: list[LegalHold], time_field: str, app_field: str | None) -> Q:
    """Rows any active hold covers."""
    covered = Q(pk__in=[])
    for hold in holds:
        scope = Q(pk__isnull=False)  # everything, narrowed by the hold's scope
        if hold.application_id is not None:
            if app_field is None:
                continue
            scope &= Q(**{app_field: hold.application_id})
        if hold.starts_at:
            scope &= Q(**{f"{time_field}__gte": hold.starts_at})
        if hold.ends_at:
            scope &= Q(**{f"{time_field}__lt": hold.ends_at})
        covered |= scope
    return covered


@dataclass(frozen=True)
class Purgeable:
    """Where one category's rows live and how to find the old ones."""

    category: DataCategory
    model: str  # app_label.ModelName
    time_field: str
    app_field: str | None

    def rows(self) -> QuerySet[Model] | None:
        try:
            model = apps.get_model(self.model)
        except LookupError:  # that part of the product is not installed
            return None
        return model._default_manager.all()


PURGEABLE = [
    Purgeable(DataCategory.CONTENT, "privacy.StoredContent", "created_at", "application_id"),
    Purgeable(DataCategory.USAGE, "gateway.UsageRecord", "time", "application_id"),
    Purgeable(DataCategory.GPU_SAMPLES, "fleet.GpuSample", "time", None),
]


def retention_purge(*, actor: Actor, now: Callable[[], datetime] = timezone.now) -> dict[str, Any]:
    """Delete what is past its retention and not held; record the counts and cut-offs."""
    require(actor, Capability.PRIVACY_MANAGE)
    moment = now()
    removed: dict[str, Any] = {}
    with transaction.atomic():
        holds = list(LegalHold.objects.select_for_update().filter(released_at__isnull=True))
        for target in PURGEABLE:
            rows = target.rows()
            if rows is None:
                continue
            days = max(retention_days(target.category), FLOORS[target.category])
            cutoff = moment - timedelta(days=days)
            old = rows.filter(**{f"{target.time_field}__lt": cutoff})
            old = old.exclude(_held(holds, target.time_field, target.app_field))
            _, per_model = old.delete()
            deleted = per_model.get(old.model._meta.label, 0)
            removed[target.category] = {"before": cutoff.isoformat(), "deleted": deleted}
        audit_record(
            actor=actor,
            action="retention.purge",
            object_type="retention",
            details={"removed": removed, "holds": [h.pk for h in holds]},
        )
    return removed
