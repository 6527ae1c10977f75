"""Writing audit events. Every state-changing service calls ``audit_record`` in its transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from appliance.audit.canonical import (
    event_bytes,
    event_document,
    leaf_hash,
    needs_scrubbing,
    scrubbed,
)
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
    entry = AuditEntry(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        details=details or {},
        request_id=current_request_id(),
        source_ip=current_source_ip(),
    )
    return audit_record_many([entry])[0]


@dataclass(frozen=True)
class AuditEntry:
    """An event to append, with the request it belongs to named explicitly (for writers that
    record several requests at once, such as the gateway's group commit)."""

    actor: Actor
    action: str
    object_type: str = ""
    object_id: str | int = ""
    outcome: str = Outcome.SUCCESS
    details: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    source_ip: str = ""


def audit_record_many(entries: list[AuditEntry]) -> list[AuditEvent]:
    """Append events with consecutive ``seq`` in one statement each for the sequence and the rows.
    Fails closed like ``audit_record``."""
    try:
        with transaction.atomic():
            # The UPDATE takes the counter row's lock until commit, so seq is gap-free and events
            # become visible in seq order.
            last = _reserve(len(entries))
            now = timezone.now()
            events = []
            for seq, entry in enumerate(entries, start=last - len(entries) + 1):
                event = AuditEvent(
                    seq=seq,
                    time=now,
                    actor_kind=entry.actor.kind,
                    actor_id=str(entry.actor.id),
                    actor_label=entry.actor.label[:200],
                    action=entry.action,
                    object_type=entry.object_type,
                    object_id=str(entry.object_id),
                    outcome=entry.outcome,
                    request_id=entry.request_id,
                    source_ip=entry.source_ip,
                    details=entry.details,
                    schema_version=SCHEMA_VERSION,
                )
                event.leaf_hash = _leaf_of(event)
                events.append(event)
            if len(events) == 1:
                events[0].save(force_insert=True)
            else:
                AuditEvent.objects.bulk_create(events)
    except (DatabaseError, AuditSequence.DoesNotExist) as exc:
        actions = ", ".join(sorted({e.action for e in entries}))
        logger.error("audit events %s could not be written: %s", actions, type(exc).__name__)
        raise AuditUnavailable(
            "The audit log cannot be written right now, so the change was not made."
        ) from exc
    return events


SCRUBBED_FIELDS = ("actor_label", "object_type", "object_id", "request_id", "source_ip", "details")


def _leaf_of(event: AuditEvent) -> str:
    """The event's leaf hash; values canonical JSON cannot encode are scrubbed first (and stored
    scrubbed, so the row still hashes to its leaf)."""
    try:
        data = event_bytes(event_document_of(event))
        if not needs_scrubbing(data, event.details):
            return leaf_hash(data)
    except ValueError:
        pass
    for name in SCRUBBED_FIELDS:
        setattr(event, name, scrubbed(getattr(event, name)))
    return leaf_hash(event_bytes(event_document_of(event)))


def _reserve(count: int) -> int:
    """Advance the counter by ``count`` and return its new value, in one round trip."""
    table = AuditSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET "value" = "value" + %s WHERE "id" = 1 RETURNING "value"',  # noqa: S608 - our table name
            [count],
        )
        row = cursor.fetchone()
    if row is None:
        raise AuditSequence.DoesNotExist("the audit sequence row is missing")
    return int(row[0])


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
