"""Signed export bundles for auditors (see docs/audit.md for the format).

A bundle covers a contiguous run of events (``seq`` first..last, chosen by the time range), because
only a contiguous run can be proven complete: with the compact range of the events before it and a
consistency proof to a signed checkpoint, the offline verifier recomputes the checkpoint's root
from the exported bytes. Other filters (actor, action, object, outcome) choose the rows of the
readable ``events.csv``; ``events.jsonl`` always holds the whole run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from appliance.accounts.permissions import Capability, require
from appliance.audit.bundles import bundle_write
from appliance.audit.checkpoints import checkpoint_create, checkpoint_latest
from appliance.audit.models import AuditEvent, AuditExport
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.choices import JobKind
from appliance.core.errors import Conflict, ValidationFailed
from appliance.core.jobs import job_finish, job_progress, job_start
from appliance.core.models import Job
from appliance.core.times import refuse_naive

logger = logging.getLogger(__name__)

ROW_FILTERS = ("actor_kind", "actor_id", "object_type", "object_id", "outcome")


def _filters_json(filters: dict[str, Any]) -> dict[str, str]:
    """The filters that were given, as strings (times in ISO 8601), for storing and the manifest."""
    out = {}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def audit_export_request(*, actor: Actor, filters: dict[str, Any], enqueue: bool = True) -> Job:
    """Record an export request (itself an audit event) and queue the job that builds it."""
    require(actor, Capability.AUDIT_EXPORT)
    since, until = filters.get("since"), filters.get("until")
    refuse_naive(since=since, until=until)
    if since and until and since >= until:
        raise ValidationFailed(
            "The time range is empty.", fields={"until": ["Must be later than since."]}
        )
    with transaction.atomic():
        export = AuditExport.objects.create(
            filters=_filters_json(filters), requested_by=actor.label[:200]
        )
        job = Job.objects.create(
            kind=JobKind.AUDIT_EXPORT,
            object_type="audit_export",
            object_id=str(export.pk),
            created_by_id=actor.user_id,
        )
        audit_record(
            actor=actor,
            action="audit.export_request",
            object_type="audit_export",
            object_id=str(export.pk),
            details={"filters": export.filters},
        )
        if enqueue:
            from appliance.audit.tasks import build_export

            transaction.on_commit(lambda: build_export.delay(str(job.pk)))
    return job


def _seq_range(filters: dict[str, str], tree_size: int) -> tuple[int, int]:
    """The contiguous run of events the time range covers, within the signed tree."""
    events = AuditEvent.objects.filter(seq__lte=tree_size)
    first, last = 1, tree_size
    if "since" in filters:
        found = events.filter(time__gte=filters["since"]).order_by("seq").first()
        first = found.seq if found else tree_size + 1
    if "until" in filters:
        found = events.filter(time__lt=filters["until"]).order_by("-seq").first()
        last = found.seq if found else 0
    if last < first:
        last = first - 1  # an empty run, still proven against the checkpoint
    return first, last


def _field(document: dict[str, Any], name: str) -> Any:
    for group in ("actor", "object"):
        if name.startswith(f"{group}_"):
            return document[group][name.removeprefix(f"{group}_")]
    return document.get(name)


def _selected(document: dict[str, Any], filters: dict[str, str]) -> bool:
    """Whether an event matches the row filters (the time range chose the run already)."""
    if any(name in filters and _field(document, name) != filters[name] for name in ROW_FILTERS):
        return False
    action = filters.get("action")
    if not action:
        return True
    if action.endswith("."):
        return bool(document["action"].startswith(action))
    return bool(document["action"] == action)


def audit_export_build(*, job_id: str) -> None:
    """The export job: sign a fresh checkpoint, write and sign the bundle, record its hash."""
    job = Job.objects.get(pk=job_id)
    export = AuditExport.objects.get(pk=job.object_id)
    try:
        checkpoint_create()
        checkpoint = checkpoint_latest() or checkpoint_create(force=True)
        assert checkpoint is not None
        first, last = _seq_range(export.filters, checkpoint.tree_size)
        job_start(job=job, total=max(0, last - first + 1))
        directory = Path(settings.APPLIANCE_AUDIT_EXPORT_DIR)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        bundle = bundle_write(
            path=directory / f"audit-export-{export.pk}.zip",
            export_id=str(export.pk),
            filters=export.filters,
            checkpoint=checkpoint,
            first=first,
            last=last,
            selected=lambda document: _selected(document, export.filters),
            progress=lambda done: job_progress(job=job, done=done),
        )
        with transaction.atomic():
            export.first_seq, export.last_seq, export.selected = first, last, bundle.selected
            export.tree_size = checkpoint.tree_size
            export.file_name = bundle.path.name
            export.sha256, export.size = bundle.sha256, bundle.size
            export.save()
            audit_record(
                actor=system_actor("audit export job"),
                action="audit.export_complete",
                object_type="audit_export",
                object_id=str(export.pk),
                details={
                    "first_seq": first,
                    "last_seq": last,
                    "tree_size": checkpoint.tree_size,
                    "sha256": export.sha256,
                },
            )
        job_finish(job=job)
    except Exception as exc:
        # Our own reason, or only the class: a database error's text can quote event values.
        reason = str(getattr(exc, "detail", "") or type(exc).__name__)
        logger.error("audit export %s failed: %s", export.pk, reason)
        job_finish(job=job, error=reason)


def export_path(export: AuditExport) -> Path | None:
    """The bundle's file, if the export finished and the file is still there."""
    if not export.file_name:
        return None
    path = Path(settings.APPLIANCE_AUDIT_EXPORT_DIR) / export.file_name
    return path if path.is_file() else None


def audit_export_download(*, actor: Actor, export: AuditExport) -> Path:
    """The bundle to send; taking a copy of the log is itself recorded."""
    require(actor, Capability.AUDIT_EXPORT)
    path = export_path(export)
    if path is None:
        raise Conflict("This export has no bundle (not finished, failed, or removed).")
    audit_record(
        actor=actor,
        action="audit.export_download",
        object_type="audit_export",
        object_id=str(export.pk),
        details={"sha256": export.sha256},
    )
    return path
