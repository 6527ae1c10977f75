"""Signed-in sessions: opened at sign-in, touched on use, ended by their owner, an admin, the
idle limit or the absolute limit. The only code that changes UserSession rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User, UserSession
from appliance.accounts.permissions import Capability, allows
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.errors import NotFound

USER_AGENT_CHARS = 200


class EndReason:
    SIGNED_OUT = "signed_out"
    REVOKED = "revoked"
    IDLE = "idle"
    ABSOLUTE = "absolute_limit"


def idle_limit() -> timedelta:
    return timedelta(seconds=settings.APPLIANCE_SESSION_IDLE_SECONDS)


def absolute_limit() -> timedelta:
    return timedelta(seconds=settings.SESSION_COOKIE_AGE)


def touch_interval() -> timedelta:
    """How stale ``last_seen_at`` may get before a request rewrites it: a write per request would
    cost every click a database write; this errs on the side of ending a session early."""
    return min(timedelta(seconds=30), idle_limit() / 10)


def session_open(*, user: User, source_ip: str, user_agent: str, mfa: str) -> UserSession:
    """Record a completed sign-in (password and, where set up, the second factor)."""
    now = timezone.now()
    with transaction.atomic():
        record = UserSession.objects.create(
            user=user,
            started_at=now,
            last_seen_at=now,
            source_ip=source_ip,
            user_agent=user_agent[:USER_AGENT_CHARS],
            mfa=mfa,
        )
        audit_record(
            actor=actor_for_user(user),
            action="auth.login",
            object_type="user",
            object_id=user.pk,
            details={"session": record.pk, "mfa": mfa or "none"},
        )
    return record


@dataclass(frozen=True)
class Check:
    """A session's state at a request: alive (``record`` set) or ended (``ended`` says why)."""

    record: UserSession | None
    ended: str = ""


def session_check(*, record_id: int | None, user: User, activity: bool = True) -> Check:
    """Whether a session may go on. An idle or too old session is ended here (and audited);
    ``activity`` is False for a page's own background refresh, which does not keep it alive."""
    record = (
        UserSession.objects.filter(pk=record_id, user=user).first()
        if record_id is not None
        else None
    )
    if record is None:
        return Check(None, EndReason.REVOKED)
    now = timezone.now()
    if now - record.started_at > absolute_limit():
        _end(record, system_actor("session limits"), EndReason.ABSOLUTE)
        return Check(None, EndReason.ABSOLUTE)
    if now - record.last_seen_at > idle_limit():
        _end(record, system_actor("session limits"), EndReason.IDLE)
        return Check(None, EndReason.IDLE)
    if activity and now - record.last_seen_at > touch_interval():
        UserSession.objects.filter(pk=record.pk).update(last_seen_at=now)
        record.last_seen_at = now
    return Check(record)


def session_end(*, actor: Actor, record_id: int, reason: str = EndReason.REVOKED) -> None:
    """End one session: one's own, or anyone's for an admin. Others' sessions answer 404 like
    missing ones."""
    record = UserSession.objects.filter(pk=record_id).select_related("user").first()
    if record is None or (
        record.user_id != actor.user_id and not allows(actor, Capability.USERS_MANAGE)
    ):
        raise NotFound("No such session.")
    _end(record, actor, reason)


def _end(record: UserSession, actor: Actor, reason: str) -> None:
    with transaction.atomic():
        deleted, _ = UserSession.objects.filter(pk=record.pk).delete()
        if not deleted:
            return  # ended by a concurrent request
        audit_record(
            actor=actor,
            action="auth.session_end",
            object_type="user",
            object_id=record.user_id,
            details={"session": record.pk, "reason": reason},
        )


def sessions_of(user: User) -> list[UserSession]:
    """A person's live sessions, most recently used first (expired ones are ended lazily, so
    they are left out here by their times)."""
    now = timezone.now()
    return list(
        UserSession.objects.filter(
            user=user,
            started_at__gt=now - absolute_limit(),
            last_seen_at__gt=now - idle_limit(),
        )
    )
