"""Break-glass (emergency) access, HIPAA 164.312(a)(2)(ii): an admin lets a person act as an
admin for a limited time, with a stated reason and the admin's own second factor. The access ends
by itself; granting, ending and expiry are high-severity audit events for the review that must
follow. The only code that changes BreakGlass rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from appliance.accounts import mfa
from appliance.accounts.choices import Role
from appliance.accounts.elevation import active
from appliance.accounts.models import BreakGlass, User
from appliance.accounts.permissions import Capability, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

MIN_MINUTES, MAX_MINUTES, DEFAULT_MINUTES = 5, 8 * 60, 60
MIN_REASON_CHARS, MAX_REASON_CHARS = 20, 1000
SEVERITY = "high"  # in every break-glass event's details, for alerting and review


def is_open(grant: BreakGlass, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return grant.ended_at is None and grant.started_at <= now < grant.expires_at


def break_glass_grant(
    *, actor: Actor, user: User, reason: str, minutes: int, code: str
) -> BreakGlass:
    """Open emergency access for ``user``. The granting admin proves it is them with a current
    authenticator code; the person must have an authenticator too (admins must)."""
    require(actor, Capability.USERS_MANAGE)
    reason = reason.strip()
    fields: dict[str, list[str]] = {}
    if not MIN_REASON_CHARS <= len(reason) <= MAX_REASON_CHARS:
        fields["reason"] = [
            f"Say why, in {MIN_REASON_CHARS} to {MAX_REASON_CHARS} characters: it is reviewed."
        ]
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        fields["minutes"] = [f"Between {MIN_MINUTES} and {MAX_MINUTES} minutes."]
    if fields:
        raise ValidationFailed("The emergency access was not opened.", fields=fields)
    if actor.user is None or actor.user_id == user.pk:
        raise PermissionDenied("Emergency access is opened by another admin.", code="not_self")
    if user.role == Role.ADMIN or not user.is_active:
        raise Conflict("Only an active person who is not an admin can get it.", code="not_needed")
    if not mfa.mfa_enrolled(user):
        raise Conflict(
            f"{user.username} must set up an authenticator first.", code="mfa_not_enrolled"
        )
    if active(user.pk) is not None:  # before the code, so a refusal does not spend one
        raise Conflict(f"{user.username} has emergency access already.", code="already_open")
    mfa.mfa_verify(user=actor.user, code=code)  # the granting admin's own second factor
    now = timezone.now()
    with transaction.atomic():
        if active(user.pk, now) is not None:
            raise Conflict(f"{user.username} has emergency access already.", code="already_open")
        grant = BreakGlass.objects.create(
            user=user,
            granted_by=actor.user,
            reason=reason,
            started_at=now,
            expires_at=now + timedelta(minutes=minutes),
        )
        _audit(actor, "access.break_glass_grant", grant, minutes=minutes, reason=reason)
    return grant


def break_glass_end(*, actor: Actor, grant_id: int) -> BreakGlass:
    """End emergency access before its time (the emergency is over)."""
    require(actor, Capability.USERS_MANAGE)
    with transaction.atomic():
        grant = BreakGlass.objects.select_for_update().filter(pk=grant_id).first()
        if grant is None:
            raise NotFound("No such emergency access.")
        if grant.ended_at is not None or grant.expires_at <= timezone.now():
            raise Conflict("That emergency access has ended already.", code="already_ended")
        grant.ended_at, grant.ended_by, grant.expiry_recorded = timezone.now(), actor.user, True
        grant.save(update_fields=["ended_at", "ended_by", "expiry_recorded"])
        _audit(actor, "access.break_glass_end", grant)
    return grant


def break_glass_expire(*, now: datetime | None = None) -> int:
    """Record the end of every emergency access whose time is up (the access itself stopped at
    ``expires_at`` whether or not this ran). Periodic."""
    now = now or timezone.now()
    due = BreakGlass.objects.filter(expires_at__lte=now, expiry_recorded=False)
    count = 0
    for grant_id in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            grant = BreakGlass.objects.select_for_update().get(pk=grant_id)
            if grant.expiry_recorded:
                continue
            grant.expiry_recorded = True
            grant.save(update_fields=["expiry_recorded"])
            _audit(system_actor("break-glass expiry"), "access.break_glass_expire", grant)
            count += 1
    return count


def break_glass_list(*, actor: Actor) -> QuerySet[BreakGlass]:
    require(actor, Capability.USERS_VIEW)
    return BreakGlass.objects.select_related("user", "granted_by", "ended_by")


def _audit(actor: Actor, action: str, grant: BreakGlass, **extra: object) -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="user",
        object_id=grant.user_id,
        details={
            "severity": SEVERITY,
            "break_glass": grant.pk,
            "user": grant.user.username,
            "role": grant.role,
            "expires_at": grant.expires_at.isoformat(),
            **extra,
        },
    )
