"""Registry services directly: the import and verify jobs, artifact sharing, and what happens when
a job fails or is delivered twice."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from appliance.core.models import Job
from appliance.registry import services
from appliance.registry.models import Adapter, Artifact, BaseModel
from appliance.registry.store import ArtifactStore
from tests.conftest import actor
from tests.support import write_adapter_dir, write_model_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def held_jobs(django_capture_on_commit_callbacks: Any) -> Any:
    """Call something but hold back the jobs it queued; returns (result, run_the_jobs)."""

    def call(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, Callable[[], None]]:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            result = fn(*args, **kwargs)

        def run() -> None:
            for callback in callbacks:
                callback()

        return result, run

    return call


@pytest.fixture
def model_dir(import_root: Path) -> Path:
    return write_model_dir(import_root / "tiny-llama")


def import_model(user: User, run_jobs: Any, name: str, path: Path, **extra: Any) -> BaseModel:
    model, _ = run_jobs(
        services.model_import, actor=actor(user), name=name, path=str(path), **extra
    )
    model.refresh_from_db()
    return model


def tamper(path: Path) -> None:
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def blob(sha256: str) -> Path:
    return ArtifactStore(Path(settings.APPLIANCE_ARTIFACT_ROOT)).blob_path(sha256)


def staging_entries() -> list[Path]:
    staging = Path(settings.APPLIANCE_STAGING_DIR)
    return sorted(staging.iterdir()) if staging.exists() else []


def test_permission_is_checked_before_the_path_is_looked_at(auditor: User) -> None:
    with pytest.raises(PermissionDenied):
        services.model_import(actor=actor(auditor), name="x", path="/nonexistent")
    assert not BaseModel.objects.exists()


def test_import_job_records_the_system_as_actor_of_the_completion(
    admin: User, model_dir: Path, run_jobs: Any
) -> None:
    model = import_model(admin, run_jobs, "tiny-llama", model_dir)
    started = AuditEvent.objects.get(action="model.import")
    complete = AuditEvent.objects.get(action="model.import_complete")
    assert (started.actor_kind, started.actor_id) == ("user", str(admin.pk))
    assert complete.actor_kind == "system"
    assert complete.object_id == str(model.pk)


def test_import_job_that_finds_the_directory_changed_marks_the_model_failed(
    operator: User, model_dir: Path, tmp_path: Path, held_jobs: Any
) -> None:
    (model, job), run = held_jobs(
        services.model_import, actor=actor(operator), name="moving", path=str(model_dir)
    )
    (model_dir / "sneaky.json").symlink_to(tmp_path)  # appears after the request was checked

    run()

    model.refresh_from_db()
    job.refresh_from_db()
    assert model.status == "failed"
    assert model.artifact is None
    assert job.status == "failed"
    assert "symbolic link" in job.error
    assert not Artifact.objects.exists()
    complete = AuditEvent.objects.get(action="model.import_complete")
    assert complete.outcome == "failure"
    assert "symbolic link" in complete.details["reason"]


def test_failed_model_may_be_retired_but_not_verified_or_approved(
    operator: User, admin2: User, model_dir: Path, tmp_path: Path, held_jobs: Any
) -> None:
    (model, _), run = held_jobs(
        services.model_import, actor=actor(operator), name="broken", path=str(model_dir)
    )
    (model_dir / "sneaky.json").symlink_to(tmp_path)
    run()
    model.refresh_from_db()

    with pytest.raises(Conflict) as verify:
        services.entry_verify(actor=actor(operator), entry=model)
    assert verify.value.code == "not_verifiable"
    with pytest.raises(Conflict) as approve:
        services.entry_approve(actor=actor(admin2), entry=model)
    assert approve.value.code == "not_pending"
    services.entry_retire(actor=actor(operator), entry=model)
    model.refresh_from_db()
    assert model.status == "retired"


def test_failed_upload_import_job_still_empties_staging(
    operator: User, admin: User, model_dir: Path, tmp_path: Path, run_jobs: Any, held_jobs: Any
) -> None:
    base = import_model(admin, run_jobs, "tiny-llama", model_dir)
    source = write_adapter_dir(tmp_path / "src" / "lora")
    archive = tmp_path / "lora.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(source, arcname="lora")
    (adapter, job), run = held_jobs(
        services.adapter_import_archive,
        actor=actor(operator),
        name="lora",
        base_model=base,
        archive=archive,
        filename="lora.tar",
    )
    staged = Path(job.params["source"])
    assert staged.is_relative_to(settings.APPLIANCE_STAGING_DIR)
    (staged / "adapter_config.json").unlink()
    (staged / "adapter_config.json").symlink_to(tmp_path / "nowhere")

    run()

    adapter.refresh_from_db()
    job.refresh_from_db()
    assert adapter.status == "failed"
    assert job.status == "failed"
    assert staging_entries() == []


@pytest.mark.parametrize("later", ["approve", "retire"])
def test_import_job_delivered_again_does_not_undo_a_later_decision(
    admin: User, admin2: User, model_dir: Path, run_jobs: Any, later: str
) -> None:
    model, job = run_jobs(
        services.model_import, actor=actor(admin), name="tiny-llama", path=str(model_dir)
    )
    model.refresh_from_db()
    if later == "approve":
        services.entry_approve(actor=actor(admin2), entry=model)
    else:
        services.entry_retire(actor=actor(admin2), entry=model)
    decided = BaseModel.objects.get(pk=model.pk).status

    services.entry_ingest(job_id=str(job.id))  # acks_late: the broker may deliver it twice

    assert BaseModel.objects.get(pk=model.pk).status == decided
    assert AuditEvent.objects.filter(action="model.import_complete").count() == 1
    assert Job.objects.get(pk=job.id).status == "succeeded"


def test_copy_and_reference_imports_of_the_same_files_get_separate_artifacts(
    admin: User, model_dir: Path, run_jobs: Any
) -> None:
    copied = import_model(admin, run_jobs, "copied", model_dir)
    referenced = import_model(admin, run_jobs, "referenced", model_dir, storage="reference")
    again = import_model(admin, run_jobs, "referenced-again", model_dir, storage="reference")

    assert copied.artifact.digest == referenced.artifact.digest
    assert copied.artifact_id != referenced.artifact_id
    assert referenced.artifact_id == again.artifact_id
    assert Artifact.objects.count() == 2


def test_reference_imports_of_two_directories_are_verified_separately(
    admin: User, operator: User, model_dir: Path, import_root: Path, run_jobs: Any
) -> None:
    other_dir = import_root / "other"
    shutil.copytree(model_dir, other_dir)
    first = import_model(admin, run_jobs, "first", model_dir, storage="reference")
    second = import_model(admin, run_jobs, "second", other_dir, storage="reference")
    assert first.artifact_id != second.artifact_id
    tamper(other_dir / "config.json")

    run_jobs(services.entry_verify, actor=actor(operator), entry=second)

    assert BaseModel.objects.get(pk=first.pk).status == "pending"
    assert BaseModel.objects.get(pk=second.pk).status == "quarantined"


def test_reverifying_a_quarantined_model_does_not_audit_a_second_quarantine(
    admin: User, operator: User, model_dir: Path, run_jobs: Any
) -> None:
    model = import_model(admin, run_jobs, "tiny-llama", model_dir)
    tamper(blob(model.artifact.files[0]["sha256"]))
    run_jobs(services.entry_verify, actor=actor(operator), entry=model)
    model.refresh_from_db()
    assert model.status == "quarantined"

    job = run_jobs(services.entry_verify, actor=actor(operator), entry=model)

    assert Job.objects.get(pk=job.pk).status == "failed"
    assert AuditEvent.objects.filter(action="artifact.verify", outcome="failure").count() == 2
    assert AuditEvent.objects.filter(action="model.quarantine").count() == 1


def test_reimporting_the_files_of_a_failed_artifact_is_not_approvable(
    admin: User, admin2: User, operator: User, model_dir: Path, import_root: Path, run_jobs: Any
) -> None:
    first = import_model(admin, run_jobs, "first", model_dir)
    tamper(blob(first.artifact.files[0]["sha256"]))
    run_jobs(services.entry_verify, actor=actor(operator), entry=first)
    copy_dir = import_root / "copy"
    shutil.copytree(model_dir, copy_dir)

    second = import_model(admin, run_jobs, "second", copy_dir)

    assert second.artifact_id == first.artifact_id
    assert second.artifact.verified_at is None
    with pytest.raises(Conflict) as refused:
        services.entry_approve(actor=actor(admin2), entry=second)
    assert refused.value.code == "not_verified"


def test_adapter_can_be_imported_by_reference(
    admin: User, operator: User, model_dir: Path, import_root: Path, run_jobs: Any
) -> None:
    base = import_model(admin, run_jobs, "tiny-llama", model_dir)
    directory = write_adapter_dir(import_root / "lora")
    adapter, _ = run_jobs(
        services.adapter_import,
        actor=actor(operator),
        name="lora",
        base_model=base,
        path=str(directory),
        storage="reference",
    )
    adapter.refresh_from_db()
    assert adapter.status == "pending"
    assert adapter.artifact.location == str(directory.resolve())
    tamper(directory / "adapter_model.safetensors")
    run_jobs(services.entry_verify, actor=actor(operator), entry=adapter)
    assert Adapter.objects.get(pk=adapter.pk).status == "quarantined"
    assert BaseModel.objects.get(pk=base.pk).status == "pending"


def test_adapter_refused_after_extraction_leaves_no_staging(
    admin: User, operator: User, model_dir: Path, tmp_path: Path, run_jobs: Any
) -> None:
    base = import_model(admin, run_jobs, "tiny-llama", model_dir)
    source = write_adapter_dir(tmp_path / "src" / "lora", rank=4)
    (source / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    archive = tmp_path / "lora.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", source.parent, "lora")

    with pytest.raises(ValidationFailed) as refused:
        services.adapter_import_archive(
            actor=actor(operator), name="lora", base_model=base, archive=archive, filename="x.zip"
        )

    assert refused.value.code == "bad_config"
    assert staging_entries() == []
    assert not Adapter.objects.exists()
    assert Job.objects.count() == 1  # the base model's import only
