"""Signed export bundles for auditors (see docs/audit.md for the format).

A bundle covers a contiguous run of events (``seq`` first..last, chosen by the time range), because
only a contiguous run can be proven complete: with the compact range of the events before it and a
consistency proof to a signed checkpoint, the offline verifier recomputes the checkpoint's root
from the exported bytes. Other filters (actor, action, object, outcome) choose the rows of the
readable ``events.csv``; ``events.jsonl`` always holds the whole run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.timezone import is_naive

from appliance.accounts.permissions import Capability, require
from appliance.audit.checkpoints import checkpoint_create, checkpoint_latest, checkpoint_note
from appliance.audit.keys import public_pem, signer_of, signing_key_active
from appliance.audit.merkle import Frontier, consistency_proof, leaf_hash
from appliance.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from appliance.audit.services import audit_record
from appliance.audit.tree import StoredTree, stored_events
from appliance.core.actors import Actor, system_actor
from appliance.core.choices import JobKind
from appliance.core.errors import Conflict, ValidationFailed
from appliance.core.jobs import job_finish, job_progress, job_start
from appliance.core.models import Job

logger = logging.getLogger(__name__)

FORMAT = "appliance-audit-export/1"
VERIFIER = Path(settings.BASE_DIR) / "compliance" / "verify_export.py"
CSV_COLUMNS = (
    "seq",
    "time",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "object_type",
    "object_id",
    "outcome",
    "request_id",
    "source_ip",
    "details",
)
ROW_FILTERS = ("actor_kind", "actor_id", "object_type", "object_id", "outcome")
PROGRESS_EVERY = 5000


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
    naive = [name for name in ("since", "until") if filters.get(name) and is_naive(filters[name])]
    if naive:
        raise ValidationFailed(
            "Give times with a zone, e.g. 2026-01-31T00:00:00Z.",
            fields={name: ["A time zone is required."] for name in naive},
        )
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


def _csv_row(document: dict[str, Any]) -> list[str]:
    return [
        str(document["seq"]),
        document["time"],
        document["actor"]["kind"],
        document["actor"]["id"],
        document["actor"]["label"],
        document["action"],
        document["object"]["type"],
        document["object"]["id"],
        document["outcome"],
        document["request_id"],
        document["source_ip"],
        json.dumps(document["details"], sort_keys=True, ensure_ascii=False),
    ]


def _prefix(size: int) -> Frontier:
    """The compact range of the first ``size`` leaves: one perfect subtree per set bit."""
    tree, hashes, start = StoredTree(), [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            hashes.append(tree(start, 1 << bit))
            start += 1 << bit
    return Frontier(size, hashes)


def _checkpoint_json(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.tree_size,
        "root": checkpoint.root,
        "note": checkpoint_note(checkpoint),
        "key_fingerprint": checkpoint.key.fingerprint,
    }


def _file_entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


class _Writer:
    """Builds the events files of one bundle while checking every leaf against its row."""

    def __init__(self, job: Job, filters: dict[str, str]) -> None:
        self.job, self.filters = job, filters
        self.jsonl = io.BytesIO()
        self.csv_text = io.StringIO()
        self.csv = csv.writer(self.csv_text, lineterminator="\n")
        self.csv.writerow(CSV_COLUMNS)
        self.selected = 0

    def write(self, first: int, last: int, frontier: Frontier) -> None:
        for done, event in enumerate(stored_events(first - 1, last), start=1):
            leaf = leaf_hash(event.data)
            if event.seq != frontier.size + 1 or leaf.hex() != event.stored_leaf:
                raise ValidationFailed(
                    f"Event {frontier.size + 1} is missing or changed; run `audit verify`."
                )
            frontier.append(leaf)
            self.jsonl.write(event.data + b"\n")
            document = json.loads(event.data)
            if _selected(document, self.filters):
                self.selected += 1
                self.csv.writerow(_csv_row(document))
            if done % PROGRESS_EVERY == 0:
                job_progress(job=self.job, done=done)
        if frontier.size != last:
            raise ValidationFailed(f"Event {frontier.size + 1} is missing; run `audit verify`.")


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
        frontier = _prefix(first - 1)
        prefix_hashes = [h.hex() for h in frontier.hashes]
        writer = _Writer(job, export.filters)
        writer.write(first, last, frontier)
        bundle = _bundle(export, checkpoint, first, last, prefix_hashes, writer)
        path = _store(export, bundle)
        with transaction.atomic():
            export.first_seq, export.last_seq, export.selected = first, last, writer.selected
            export.tree_size = checkpoint.tree_size
            export.file_name = path.name
            export.sha256 = hashlib.sha256(bundle).hexdigest()
            export.size = len(bundle)
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
        reason = getattr(exc, "detail", "") or type(exc).__name__
        logger.exception("audit export %s failed", export.pk)
        job_finish(job=job, error=str(reason))


def _bundle(
    export: AuditExport,
    checkpoint: AuditCheckpoint,
    first: int,
    last: int,
    prefix_hashes: list[str],
    writer: _Writer,
) -> bytes:
    signer = signer_of(signing_key_active())
    pem = public_pem(signer.public_key)
    files = {
        "events.jsonl": writer.jsonl.getvalue(),
        "events.csv": writer.csv_text.getvalue().encode("utf-8"),
        "pubkey.pem": pem,
        "verify_export.py": VERIFIER.read_bytes(),
    }
    previous = checkpoint.previous
    keys = {checkpoint.key.fingerprint: checkpoint.key.public_key}
    keys[signer.row.fingerprint] = signer.row.public_key
    if previous is not None:
        keys[previous.key.fingerprint] = previous.key.public_key
    tree = StoredTree()
    manifest = {
        "format": FORMAT,
        "export_id": str(export.pk),
        "origin": checkpoint.origin,
        "created_at": timezone.now().isoformat(),
        "filters": export.filters,
        "range": {"first_seq": first, "last_seq": last},
        "selected": writer.selected,
        "prefix": {"size": first - 1, "hashes": prefix_hashes},
        "checkpoint": _checkpoint_json(checkpoint),
        "range_to_checkpoint": [
            h.hex() for h in consistency_proof(last, checkpoint.tree_size, tree)
        ],
        "previous_checkpoint": _checkpoint_json(previous) if previous else None,
        "previous_to_checkpoint": list(checkpoint.consistency) if previous else [],
        "keys": keys,
        "key_fingerprint": signer.row.fingerprint,
        "files": {name: _file_entry(data) for name, data in files.items()},
        "algorithms": {
            "canonical": "RFC 8785 (JCS)",
            "leaf": "SHA-256(0x00 || event bytes)",
            "node": "SHA-256(0x01 || left || right)",
            "tree": "RFC 6962 Merkle Tree Hash",
            "signature": "Ed25519",
            "checkpoint": "C2SP signed note",
        },
    }
    manifest_bytes = rfc8785.dumps(manifest)
    files["manifest.json"] = manifest_bytes
    files["manifest.sig"] = signer.sign(manifest_bytes).hex().encode("ascii") + b"\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    return buffer.getvalue()


def _store(export: AuditExport, bundle: bytes) -> Path:
    directory = Path(settings.APPLIANCE_AUDIT_EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"audit-export-{export.pk}.zip"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bundle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


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
