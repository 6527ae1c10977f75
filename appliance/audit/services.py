"""Writing audit events. Every state-changing service calls ``audit_record`` in its transaction."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from appliance.audit.canonical import canonical_bytes, event_document, leaf_hash
from appliance.audit.choices import Outcome
from appliance.audit.models import AuditEvent, AuditSequence
from appliance.core.actors import Actor
from appliance.core.context import current_request_id, current_source_ip
from appliance.core.errors import AuditUnavailable

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: str | int = "",
    outcome: str = Outcome.SUCCESS,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Raises AuditUnavailable if it cannot be written, which rolls back the
    caller's transaction: a change that cannot be audited does not happen (fail closed).

    ``details`` must hold no secrets and no prompt or completion text.
    """
    try:
        with transaction.atomic():
            # The UPDATE takes the counter row's lock until commit, so seq is gap-free and events
            # become visible in seq order.
            AuditSequence.objects.filter(pk=1).update(value=F("value") + 1)
            seq = AuditSequence.objects.values_list("value", flat=True).get(pk=1)
            event = AuditEvent(
                seq=seq,
                time=timezone.now(),
                actor_kind=actor.kind,
                actor_id=str(actor.id),
                actor_label=actor.label[:200],
                action=action,
                object_type=object_type,
                object_id=str(object_id),
                outcome=outcome,
                request_id=current_request_id(),
                source_ip=current_source_ip(),
                details=details or {},
                schema_version=SCHEMA_VERSION,
            )
            event.leaf_hash = leaf_hash(canonical_bytes(event_document_of(event)))
            event.save(force_insert=True)
    except (DatabaseError, AuditSequence.DoesNotExist) as exc:
        logger.error("audit event %s could not be written: %s", action, type(exc).__name__)
        raise AuditUnavailable(
            "The audit log cannot be written right now, so the change was not made."
        ) from exc
    return event


def event_document_of(event: AuditEvent) -> dict[str, Any]:
    """The canonical document of a stored (or about to be stored) event."""
    return event_document(
        schema_version=event.schema_version,
        seq=event.seq,
        time=event.time,
        actor_kind=event.actor_kind,
        actor_id=event.actor_id,
        actor_label=event.actor_label,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        outcome=event.outcome,
        request_id=event.request_id,
        source_ip=event.source_ip,
        details=event.details,
    )
