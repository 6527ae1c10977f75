"""Reading the audit log."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from appliance.accounts.permissions import Capability, require
from appliance.audit.models import AuditEvent
from appliance.core.actors import Actor


def audit_event_list(
    *,
    actor: Actor,
    since: datetime | None = None,
    until: datetime | None = None,
    actor_kind: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str | None = None,
) -> QuerySet[AuditEvent]:
    """Events matching every given filter, newest first."""
    require(actor, Capability.AUDIT_VIEW)
    events = AuditEvent.objects.all()
    if since:
        events = events.filter(time__gte=since)
    if until:
        events = events.filter(time__lt=until)
    exact = {
        "actor_kind": actor_kind,
        "actor_id": actor_id,
        "object_type": object_type,
        "object_id": object_id,
        "outcome": outcome,
    }
    events = events.filter(**{k: v for k, v in exact.items() if v})
    if action:
        events = (
            events.filter(action__startswith=action)
            if action.endswith(".")
            else events.filter(action=action)
        )
    return events.order_by("-seq")
