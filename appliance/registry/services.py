"""Importing, approving, verifying and retiring base models and LoRA adapters.

An import checks the files at once (layout, config, safetensors headers, adapter shapes) so a bad
directory is refused before anything is written; hashing and copying then run as a job. Approval
needs a second administrator (four eyes) and verified files.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.changes import access_changed
from appliance.core.choices import JobKind
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from appliance.core.jobs import job_finish, job_log, job_progress, job_start
from appliance.core.models import Job
from appliance.registry.archives import extract_archive
from appliance.registry.choices import RETIRABLE, VERIFIABLE, EntryStatus, Storage
from appliance.registry.inspection import inspect_adapter_dir, inspect_model_dir, list_files
from appliance.registry.models import Adapter, Artifact, BaseModel, RegistryEntry
from appliance.registry.store import ArtifactStore, hash_file, manifest_digest, remove_tree

logger = logging.getLogger(__name__)

OBJECT_TYPES: dict[type[RegistryEntry], str] = {BaseModel: "model", Adapter: "adapter"}
PROGRESS_EVERY_BYTES = 64 * 1024 * 1024


def object_type_of(entry: RegistryEntry) -> str:
    return OBJECT_TYPES[type(entry)]


def artifact_store() -> ArtifactStore:
    return ArtifactStore(settings.APPLIANCE_ARTIFACT_ROOT)


def resolve_import_path(path: str) -> Path:
    """The real directory behind ``path``, which must lie inside an allowed import root.

    Imports read files on the control plane's disk, so they are confined to the directories the
    administrator listed in APPLIANCE_IMPORT_ROOTS (symlinks are resolved before the check).
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        raise ValidationFailed("Give an absolute path.", fields={"path": ["Must be absolute."]})
    real = candidate.resolve()
    roots = settings.APPLIANCE_IMPORT_ROOTS
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ValidationFailed(
            f"{path} is outside the import directories ({allowed}).",
            code="path_not_allowed",
            fields={"path": ["Not inside an import directory (APPLIANCE_IMPORT_ROOTS)."]},
        )
    if not real.is_dir():
        raise ValidationFailed(
            f"{path} is not a directory.", code="not_a_directory", fields={"path": ["Not found."]}
        )
    return real


def _check_name(model: type[RegistryEntry], name: str) -> str:
    name = name.strip()
    if not name:
        raise ValidationFailed("A name is required.", fields={"name": ["Required."]})
    if model._default_manager.filter(name=name).exists():
        raise Conflict(f"The name {name!r} is already taken.", code="duplicate_name")
    return name


def _start_ingest(
    *,
    actor: Actor,
    entry: RegistryEntry,
    source: Path,
    cleanup: Path | None,
    details: dict[str, Any],
) -> Job:
    """Save the entry, its import job and the audit event, then queue the job after commit."""
    from appliance.registry.tasks import ingest_artifact

    object_type = object_type_of(entry)
    entry.imported_by = actor.user
    entry.save()
    job = Job.objects.create(
        kind=JobKind.ARTIFACT_IMPORT,
        object_type=object_type,
        object_id=str(entry.pk),
        created_by=actor.user,
        params={"source": str(source), "cleanup": str(cleanup or "")},
    )
    audit_record(
        actor=actor,
        action=f"{object_type}.import",
        object_type=object_type,
        object_id=entry.pk,
        details={"name": entry.name, "storage": entry.storage, "job": str(job.id), **details},
    )
    transaction.on_commit(lambda: ingest_artifact.delay(str(job.id)))
    return job


def model_import(
    *,
    actor: Actor,
    name: str,
    path: str,
    storage: str = Storage.COPY,
    description: str = "",
    licence: str = "",
    source: str = "",
) -> tuple[BaseModel, Job]:
    """Register a base model from a local directory in Hugging Face layout."""
    require(actor, Capability.REGISTRY_WRITE)
    directory = resolve_import_path(path)
    facts = inspect_model_dir(directory)
    with transaction.atomic():
        model = BaseModel(
            name=_check_name(BaseModel, name),
            description=description,
            storage=storage,
            source_path=str(directory),
            family=facts.family,
            architecture=facts.architecture,
            parameter_count=facts.parameter_count,
            context_length=facts.context_length,
            licence=licence,
            source=source,
            config=facts.config,
        )
        job = _start_ingest(
            actor=actor,
            entry=model,
            source=directory,
            cleanup=None,
            details={"architecture": facts.architecture, "parameters": facts.parameter_count},
        )
    return model, job


def _usable_base(base_model: BaseModel) -> None:
    if base_model.status not in {EntryStatus.PENDING, EntryStatus.APPROVED}:
        raise Conflict(
            f"Base model {base_model.name!r} is {base_model.status}; adapters need a pending or "
            "approved base model.",
            code="base_not_usable",
        )


def adapter_import(
    *,
    actor: Actor,
    name: str,
    base_model: BaseModel,
    path: str,
    storage: str = Storage.COPY,
    description: str = "",
) -> tuple[Adapter, Job]:
    """Register a LoRA adapter from a local directory, validated against its base model."""
    require(actor, Capability.REGISTRY_WRITE)
    directory = resolve_import_path(path)
    return _adapter_register(
        actor=actor,
        name=name,
        base_model=base_model,
        directory=directory,
        storage=storage,
        description=description,
        source_path=str(directory),
        cleanup=None,
    )


def adapter_import_archive(
    *,
    actor: Actor,
    name: str,
    base_model: BaseModel,
    archive: Path,
    filename: str,
    description: str = "",
) -> tuple[Adapter, Job]:
    """Register a LoRA adapter from an uploaded .tar.gz or .zip. A refused archive leaves nothing
    behind: the staging directory is removed before the error is raised."""
    require(actor, Capability.REGISTRY_WRITE)
    staging = settings.APPLIANCE_STAGING_DIR / uuid.uuid4().hex
    settings.APPLIANCE_STAGING_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = extract_archive(
        archive, staging, max_total_bytes=settings.APPLIANCE_MAX_UPLOAD_BYTES
    )
    try:
        return _adapter_register(
            actor=actor,
            name=name,
            base_model=base_model,
            directory=directory,
            storage=Storage.COPY,
            description=description,
            source_path=f"upload:{Path(filename).name}",
            cleanup=staging,
        )
    except BaseException:
        remove_tree(staging)
        raise


def _adapter_register(
    *,
    actor: Actor,
    name: str,
    base_model: BaseModel,
    directory: Path,
    storage: str,
    description: str,
    source_path: str,
    cleanup: Path | None,
) -> tuple[Adapter, Job]:
    _usable_base(base_model)
    facts = inspect_adapter_dir(directory, base_config=base_model.config)
    with transaction.atomic():
        adapter = Adapter(
            name=_check_name(Adapter, name),
            description=description,
            storage=storage,
            source_path=source_path,
            base_model=base_model,
            rank=facts.rank,
            alpha=facts.alpha,
            target_modules=list(facts.target_modules),
        )
        job = _start_ingest(
            actor=actor,
            entry=adapter,
            source=directory,
            cleanup=cleanup,
            details={"base_model": base_model.name, "rank": facts.rank},
        )
    return adapter, job


def _entry_for_job(job: Job) -> RegistryEntry:
    model = BaseModel if job.object_type == "model" else Adapter
    return model.objects.get(pk=job.object_id)


def _progress_reporter(job: Job) -> Any:
    state = {"done": 0, "reported": 0}

    def on_bytes(count: int) -> None:
        state["done"] += count
        if state["done"] - state["reported"] >= PROGRESS_EVERY_BYTES:
            state["reported"] = state["done"]
            job_progress(job=job, done=state["done"])

    return on_bytes


def entry_ingest(*, job_id: str) -> None:
    """The import job: hash (and for COPY, copy) every file, then record the artifact and move the
    entry to ``pending``. Any failure marks the entry ``failed`` with the reason."""
    job = Job.objects.get(pk=job_id)
    entry = _entry_for_job(job)
    source = Path(job.params["source"])
    actor = system_actor("import job")
    object_type = object_type_of(entry)
    if entry.status != EntryStatus.IMPORTING:
        # acks_late: a finished job may be delivered again; never undo an approval or retirement.
        logger.warning("import job %s skipped: %s is %s", job.pk, object_type, entry.status)
        if job.params.get("cleanup"):
            remove_tree(Path(job.params["cleanup"]))
        return
    try:
        names = list_files(source)
        job_start(job=job, total=sum((source / n).stat().st_size for n in names))
        job_log(job=job, line=f"hashing {len(names)} files")
        on_bytes = _progress_reporter(job)
        store = artifact_store()
        files = []
        for name in names:
            if entry.storage == Storage.COPY:
                sha256, size = store.ingest(source / name, on_bytes)
            else:
                sha256, size = hash_file(source / name, on_bytes)
            files.append({"path": name, "size": size, "sha256": sha256})
        digest = manifest_digest(files)
        location = "" if entry.storage == Storage.COPY else str(source)
        with transaction.atomic():
            artifact, created = Artifact.objects.get_or_create(
                digest=digest,
                location=location,
                defaults={
                    "storage": entry.storage,
                    "files": files,
                    "total_bytes": sum(f["size"] for f in files),
                    "verified_at": timezone.now(),
                },
            )
            entry.artifact = artifact
            entry.status = EntryStatus.PENDING
            entry.save(update_fields=["artifact", "status"])
            audit_record(
                actor=actor,
                action=f"{object_type}.import_complete",
                object_type=object_type,
                object_id=entry.pk,
                details={"digest": digest, "files": len(files), "reused": not created},
            )
        job_log(job=job, line=f"artifact sha256:{digest} ({'new' if created else 'reused'})")
        job_finish(job=job)
    except Exception as exc:
        reason = exc.detail if isinstance(exc, ValidationFailed) else type(exc).__name__
        logger.warning("import job %s failed: %s", job.pk, reason)
        with transaction.atomic():
            entry.status = EntryStatus.FAILED
            entry.save(update_fields=["status"])
            audit_record(
                actor=actor,
                action=f"{object_type}.import_complete",
                object_type=object_type,
                object_id=entry.pk,
                outcome=Outcome.FAILURE,
                details={"reason": reason},
            )
        job_finish(job=job, error=reason)
    finally:
        if job.params.get("cleanup"):
            remove_tree(Path(job.params["cleanup"]))


def entry_approve(*, actor: Actor, entry: RegistryEntry) -> RegistryEntry:
    """Four eyes: an admin other than the importer approves a pending, verified entry."""
    require(actor, Capability.REGISTRY_APPROVE)
    object_type = object_type_of(entry)
    if entry.status != EntryStatus.PENDING:
        raise Conflict(
            f"Only a pending {object_type} can be approved; this one is {entry.status}.",
            code="not_pending",
        )
    if entry.imported_by_id is not None and entry.imported_by_id == actor.user_id:
        raise PermissionDenied(
            f"A {object_type} must be approved by an administrator other than the one who "
            "imported it.",
            code="four_eyes",
        )
    if entry.artifact is None or entry.artifact.verified_at is None:
        raise Conflict("The files have not been verified.", code="not_verified")
    if isinstance(entry, Adapter) and entry.base_model.status != EntryStatus.APPROVED:
        raise Conflict(
            f"Base model {entry.base_model.name!r} must be approved first.",
            code="base_not_approved",
        )
    with transaction.atomic():
        entry.status = EntryStatus.APPROVED
        entry.approved_by = actor.user
        entry.approved_at = timezone.now()
        entry.save(update_fields=["status", "approved_by", "approved_at"])
        audit_record(
            actor=actor,
            action=f"{object_type}.approve",
            object_type=object_type,
            object_id=entry.pk,
            details={"name": entry.name, "digest": entry.artifact.digest},
        )
    return entry


def entry_retire(*, actor: Actor, entry: RegistryEntry) -> RegistryEntry:
    """Retire an entry: it stays on record but can never be deployed again."""
    require(actor, Capability.REGISTRY_WRITE)
    object_type = object_type_of(entry)
    if entry.status not in RETIRABLE:
        raise Conflict(f"A {entry.status} {object_type} cannot be retired.", code="not_retirable")
    with transaction.atomic():
        previous = entry.status
        entry.status = EntryStatus.RETIRED
        entry.retired_at = timezone.now()
        entry.save(update_fields=["status", "retired_at"])
        access_changed()  # gateways stop offering it at once
        audit_record(
            actor=actor,
            action=f"{object_type}.retire",
            object_type=object_type,
            object_id=entry.pk,
            details={"name": entry.name, "previous_status": previous},
        )
    return entry


def entry_verify(*, actor: Actor, entry: RegistryEntry) -> Job:
    """Queue a re-hash of the entry's files; a mismatch quarantines every entry using them."""
    from appliance.registry.tasks import verify_artifact

    require(actor, Capability.REGISTRY_WRITE)
    object_type = object_type_of(entry)
    if entry.status not in VERIFIABLE or entry.artifact is None:
        raise Conflict(f"A {entry.status} {object_type} cannot be verified.", code="not_verifiable")
    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKind.ARTIFACT_VERIFY,
            object_type=object_type,
            object_id=str(entry.pk),
            created_by=actor.user,
            params={"requested_by": actor.label},
        )
        audit_record(
            actor=actor,
            action=f"{object_type}.verify",
            object_type=object_type,
            object_id=entry.pk,
            details={"job": str(job.id)},
        )
        transaction.on_commit(lambda: verify_artifact.delay(str(job.id)))
    return job


def artifact_mismatches(artifact: Artifact, job: Job | None = None) -> list[str]:
    """Re-hash an artifact's files; each changed, missing or unexpected file is one line."""
    store = artifact_store()
    on_bytes = _progress_reporter(job) if job else None
    problems = []
    for item in artifact.files:
        path = (
            store.blob_path(item["sha256"])
            if artifact.storage == Storage.COPY
            else Path(artifact.location) / item["path"]
        )
        if not path.is_file():
            problems.append(f"{item['path']}: missing")
            continue
        sha256, size = hash_file(path, on_bytes)
        if sha256 != item["sha256"] or size != item["size"]:
            problems.append(
                f"{item['path']}: sha256 {sha256[:12]}… expected {item['sha256'][:12]}…"
            )
    if artifact.storage == Storage.REFERENCE:
        expected = {item["path"] for item in artifact.files}
        try:
            present = set(list_files(Path(artifact.location)))
        except (OSError, ValidationFailed) as exc:
            present = set()
            problems.append(f"directory unreadable: {getattr(exc, 'detail', exc)}")
        problems.extend(f"{name}: unexpected file" for name in sorted(present - expected))
    return problems


def entry_verify_run(*, job_id: str) -> None:
    """The verify job: re-hash, stamp the artifact as verified, or quarantine on any mismatch."""
    job = Job.objects.get(pk=job_id)
    entry = _entry_for_job(job)
    artifact = entry.artifact
    assert artifact is not None  # entry_verify refuses entries without files
    job_start(job=job, total=artifact.total_bytes)
    problems = artifact_mismatches(artifact, job)
    actor = system_actor("verify job")
    with transaction.atomic():
        if not problems:
            artifact.verified_at = timezone.now()
            artifact.save(update_fields=["verified_at"])
            audit_record(
                actor=actor,
                action="artifact.verify",
                object_type="artifact",
                object_id=artifact.pk,
                details={"digest": artifact.digest, "requested_by": job.params.get("requested_by")},
            )
        else:
            artifact.verified_at = None
            artifact.save(update_fields=["verified_at"])
            audit_record(
                actor=actor,
                action="artifact.verify",
                object_type="artifact",
                object_id=artifact.pk,
                outcome=Outcome.FAILURE,
                details={"digest": artifact.digest, "problems": problems[:50]},
            )
            for model in (BaseModel, Adapter):
                # Entries already quarantined stay so; only a real change of status is audited.
                usable = VERIFIABLE - {EntryStatus.QUARANTINED}
                for victim in model.objects.filter(artifact=artifact, status__in=usable):
                    victim.status = EntryStatus.QUARANTINED
                    victim.save(update_fields=["status"])
                    access_changed()  # gateways stop offering it at once
                    audit_record(
                        actor=actor,
                        action=f"{OBJECT_TYPES[model]}.quarantine",
                        object_type=OBJECT_TYPES[model],
                        object_id=victim.pk,
                        details={"name": victim.name, "digest": artifact.digest},
                    )
    for line in problems[:50]:
        job_log(job=job, line=line)
    job_finish(job=job, error=f"{len(problems)} file(s) do not match" if problems else "")
