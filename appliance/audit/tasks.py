"""Background work of the audit log: thin wrappers that call a service."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from celery import shared_task

from appliance.audit import exports, retention, witness
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.verification import audit_verify
from appliance.core.actors import system_actor

HOUR = 3600


@shared_task(name="audit.checkpoint", ignore_result=True, time_limit=30 * 60)
def checkpoint() -> int | None:
    """Every minute: sign a checkpoint when there are new events (hourly when idle)."""
    signed = checkpoint_create()
    return signed.tree_size if signed else None


@shared_task(name="audit.verify", ignore_result=True, time_limit=6 * HOUR)
def verify() -> bool:
    """Daily: recompute the whole log; the result shows in the console and the audit log."""
    return audit_verify(actor=system_actor("scheduled verification")).valid


@shared_task(name="audit.build_export", acks_late=True, time_limit=6 * HOUR)
def build_export(job_id: str) -> None:
    exports.audit_export_build(job_id=job_id)


@shared_task(name="audit.retention_purge", ignore_result=True, time_limit=6 * HOUR)
def retention_purge() -> dict[str, object]:
    """Daily: delete what is past its retention and not under a legal hold."""
    return retention.retention_purge(actor=system_actor("retention job"))


@shared_task(name="audit.witness_forward", ignore_result=True, time_limit=300)
def witness_forward() -> dict[str, Any]:
    """Every minute when a witness is configured: send new events and checkpoints (not retried:
    the next beat sends what is still spooled)."""
    return asdict(witness.witness_forward())
