"""The role a person acts with now: their own, or that of emergency (break-glass) access in
force. Read on every request that builds an Actor, so it is one indexed query, and none for
admins."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from appliance.accounts.choices import Role
from appliance.accounts.models import BreakGlass, User


def active(user_id: int, now: datetime | None = None) -> BreakGlass | None:
    """The person's emergency access in force now, if any."""
    now = now or timezone.now()
    return (
        BreakGlass.objects.filter(
            user_id=user_id, started_at__lte=now, expires_at__gt=now, ended_at__isnull=True
        )
        .order_by("-expires_at")
        .first()
    )


def effective_role(user: User) -> str:
    """The role a person acts with now: their own, or admin during emergency access."""
    if user.role == Role.ADMIN or user.pk is None:
        return user.role
    grant = active(user.pk)
    return grant.role if grant is not None else user.role
