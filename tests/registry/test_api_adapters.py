"""LoRA adapters through the API: import from a directory or an uploaded archive, checked against
the base model's shapes; approval after the base; verification, retirement and listing."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from appliance.accounts.models import User
from appliance.accounts.services import token_create
from appliance.audit.models import AuditEvent
from appliance.core.models import Job
from appliance.registry import services
from appliance.registry.models import Adapter, BaseModel
from appliance.registry.store import ArtifactStore
from tests.conftest import actor
from tests.support import (
    assert_refused,
    blob_files,
    registry_state,
    staging_entries,
    write_adapter_dir,
    write_model_dir,
)

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def base(admin: User, import_root: Path, run_jobs: Any) -> BaseModel:
    """A pending Llama-shaped base model imported by alice."""
    directory = write_model_dir(import_root / "tiny-llama")
    model, _ = run_jobs(
        services.model_import, actor=actor(admin), name="tiny-llama", path=str(directory)
    )
    model.refresh_from_db()
    assert model.status == "pending"
    return model


@pytest.fixture
def adapter_dir(import_root: Path) -> Path:
    return write_adapter_dir(import_root / "triage-lora")


def post_adapter(client: Any, run_jobs: Any, name: str, base_id: int, path: Path | str) -> Any:
    body = {"name": name, "base_model_id": base_id, "path": str(path)}
    return run_jobs(client.post, "/adapters", body)


@pytest.fixture
def imported(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> Adapter:
    """A pending adapter imported by olga for the pending base."""
    response = post_adapter(api_as(operator), run_jobs, "triage-lora", base.pk, adapter_dir)
    assert response.status_code == 202, response.data
    return Adapter.objects.get(pk=response.data["id"])


def rewrite_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# --- import from a directory ------------------------------------------------------------------


def test_valid_adapter_import_is_pending_after_its_job(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    response = post_adapter(api_as(operator), run_jobs, "triage-lora", base.pk, adapter_dir)

    assert response.status_code == 202, response.data
    assert response.data["status"] == "importing"
    adapter = Adapter.objects.get(pk=response.data["id"])
    assert adapter.status == "pending"
    assert adapter.base_model == base
    assert adapter.imported_by == operator
    assert (adapter.rank, adapter.alpha) == (8, 16.0)
    assert adapter.target_modules == ["q_proj", "v_proj"]
    assert [f["path"] for f in adapter.artifact.files] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert len(blob_files()) == len(adapter.artifact.files) + len(base.artifact.files)
    job = Job.objects.get(pk=response.data["job"]["id"])
    assert (job.status, job.object_type, job.progress) == ("succeeded", "adapter", 1.0)
    started = AuditEvent.objects.get(action="adapter.import")
    assert started.details["base_model"] == "tiny-llama"
    assert started.details["rank"] == 8
    assert AuditEvent.objects.get(action="adapter.import_complete").outcome == "success"
    shown = api_as(operator).get(f"/adapters/{adapter.pk}").data
    assert shown["base_model_name"] == "tiny-llama"
    assert shown["status"] == "pending"


def test_adapter_with_all_attention_projections_is_accepted(
    api_as: Any, operator: User, base: BaseModel, import_root: Path, run_jobs: Any
) -> None:
    directory = write_adapter_dir(
        import_root / "wide", rank=4, modules=("q_proj", "k_proj", "v_proj")
    )
    response = post_adapter(api_as(operator), run_jobs, "wide", base.pk, directory)
    assert response.status_code == 202, response.data
    assert Adapter.objects.get(pk=response.data["id"]).status == "pending"


def test_adapter_with_wrong_shapes_is_refused(
    api_as: Any, operator: User, base: BaseModel, import_root: Path, run_jobs: Any
) -> None:
    directory = write_adapter_dir(import_root / "bad", b_rows={"v_proj": 128})
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "bad", base.pk, directory)
    assert_refused(response, 422, "shape_mismatch", before)


def test_adapter_whose_rank_disagrees_with_its_tensors_is_refused(
    api_as: Any, operator: User, base: BaseModel, import_root: Path, run_jobs: Any
) -> None:
    directory = write_adapter_dir(import_root / "rank", rank=4)
    rewrite_config(directory, r=16)
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "rank", base.pk, directory)
    assert_refused(response, 422, "shape_mismatch", before)


def test_adapter_for_a_base_with_other_dimensions_is_refused(
    api_as: Any, operator: User, base: BaseModel, import_root: Path, run_jobs: Any
) -> None:
    other = {**base.config, "hidden_size": 256, "head_dim": 64}
    directory = write_adapter_dir(import_root / "other", config=other)
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "other", base.pk, directory)
    assert_refused(response, 422, "shape_mismatch", before)


def test_adapter_with_a_module_the_base_does_not_have_is_refused(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    rewrite_config(adapter_dir, target_modules=["q_proj", "lm_head"])
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "odd", base.pk, adapter_dir)
    assert_refused(response, 422, "base_mismatch", before)


@pytest.mark.parametrize("peft_type", ["IA3", "PREFIX_TUNING", None])
def test_adapter_that_is_not_lora_is_refused(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any, peft_type: Any
) -> None:
    rewrite_config(adapter_dir, peft_type=peft_type)
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "ia3", base.pk, adapter_dir)
    assert_refused(response, 422, "not_lora", before)


def test_adapter_with_only_pickle_weights_is_refused(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    (adapter_dir / "adapter_model.safetensors").rename(adapter_dir / "adapter_model.bin")
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "pickled", base.pk, adapter_dir)
    assert_refused(response, 422, "no_safetensors", before)


def test_adapter_dir_with_a_symlink_is_refused(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    (adapter_dir / "README.md").symlink_to(adapter_dir / "adapter_config.json")
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "linked", base.pk, adapter_dir)
    assert_refused(response, 422, "unsafe_path", before)


def test_adapter_path_outside_the_import_roots_is_refused(
    api_as: Any, operator: User, base: BaseModel, tmp_path: Path, run_jobs: Any
) -> None:
    outside = write_adapter_dir(tmp_path / "elsewhere")
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "outside", base.pk, outside)
    assert_refused(response, 422, "path_not_allowed", before)


@pytest.mark.parametrize("status", ["retired", "quarantined", "failed", "importing"])
def test_adapter_for_a_base_that_is_not_usable_is_refused(
    api_as: Any,
    operator: User,
    base: BaseModel,
    adapter_dir: Path,
    run_jobs: Any,
    status: str,
) -> None:
    BaseModel.objects.filter(pk=base.pk).update(status=status)
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "late", base.pk, adapter_dir)
    assert_refused(response, 409, "base_not_usable", before)


def test_adapter_for_an_unknown_base_is_404(
    api_as: Any, operator: User, adapter_dir: Path, run_jobs: Any
) -> None:
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "orphan", 4242, adapter_dir)
    assert_refused(response, 404, "not_found", before)


def test_duplicate_adapter_name_is_refused(
    api_as: Any, operator: User, imported: Adapter, import_root: Path, run_jobs: Any
) -> None:
    directory = write_adapter_dir(import_root / "second", rank=4)
    client = api_as(operator)
    before = registry_state()
    response = post_adapter(client, run_jobs, "triage-lora", imported.base_model_id, directory)
    assert_refused(response, 409, "duplicate_name", before)


def test_unknown_field_in_the_adapter_body_is_refused(
    api_as: Any, operator: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    client = api_as(operator)
    before = registry_state()
    body = {"name": "x", "base_model_id": base.pk, "path": str(adapter_dir), "rank": 64}
    response = run_jobs(client.post, "/adapters", body)
    assert_refused(response, 422, "validation_error", before)


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_read_only_roles_may_not_import_adapters(
    request: pytest.FixtureRequest,
    api_as: Any,
    base: BaseModel,
    adapter_dir: Path,
    run_jobs: Any,
    role: str,
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = registry_state()
    response = post_adapter(client, run_jobs, "sneaky", base.pk, adapter_dir)
    assert_refused(response, 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_anonymous_adapter_import_is_refused_with_401(
    api_as: Any, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    before = registry_state()
    response = post_adapter(api_as(None), run_jobs, "anon", base.pk, adapter_dir)
    assert_refused(response, 401, "not_authenticated", before)


# --- approval --------------------------------------------------------------------------------


def test_adapter_approval_requires_the_base_model_approved_first(
    api_as: Any, admin: User, imported: Adapter
) -> None:
    client = api_as(admin)  # alice imported the base, olga the adapter
    before = registry_state()
    response = client.post(f"/adapters/{imported.pk}/approve")
    assert_refused(response, 409, "base_not_approved", before)


def test_adapter_is_approved_by_an_admin_once_its_base_is_approved(
    api_as: Any, admin: User, admin2: User, imported: Adapter
) -> None:
    assert api_as(admin2).post(f"/models/{imported.base_model_id}/approve").status_code == 200

    response = api_as(admin).post(f"/adapters/{imported.pk}/approve")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "approved"
    assert response.data["approved_by"] == "alice"
    imported.refresh_from_db()
    assert (imported.status, imported.approved_by) == ("approved", admin)
    event = AuditEvent.objects.get(action="adapter.approve")
    assert event.object_id == str(imported.pk)


def test_adapter_importer_may_not_approve_it(
    api_as: Any, admin: User, admin2: User, base: BaseModel, adapter_dir: Path, run_jobs: Any
) -> None:
    assert api_as(admin2).post(f"/models/{base.pk}/approve").status_code == 200
    adapter_id = post_adapter(api_as(admin), run_jobs, "mine", base.pk, adapter_dir).data["id"]
    client = api_as(admin)
    before = registry_state()
    response = client.post(f"/adapters/{adapter_id}/approve")
    assert_refused(response, 403, "four_eyes", before)
    assert api_as(admin2).post(f"/adapters/{adapter_id}/approve").status_code == 200


@pytest.mark.parametrize("role", ["operator", "auditor", "app_owner"])
def test_only_admins_may_approve_adapters(
    request: pytest.FixtureRequest, api_as: Any, admin2: User, imported: Adapter, role: str
) -> None:
    api_as(admin2).post(f"/models/{imported.base_model_id}/approve")
    client = api_as(request.getfixturevalue(role))
    before = registry_state()
    response = client.post(f"/adapters/{imported.pk}/approve")
    assert_refused(response, 403, "permission_denied", before)


def test_approving_an_adapter_twice_is_refused(
    api_as: Any, admin: User, admin2: User, imported: Adapter
) -> None:
    api_as(admin2).post(f"/models/{imported.base_model_id}/approve")
    assert api_as(admin).post(f"/adapters/{imported.pk}/approve").status_code == 200
    client = api_as(admin2)
    before = registry_state()
    response = client.post(f"/adapters/{imported.pk}/approve")
    assert_refused(response, 409, "not_pending", before)


# --- upload ----------------------------------------------------------------------------------


def make_tar_gz(source: Path, dest: Path, top: str = "triage-lora") -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(source, arcname=top)
    return dest


def make_zip(source: Path, dest: Path, top: str = "triage-lora") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, f"{top}/{path.relative_to(source).as_posix()}")
    return dest


def add_tar_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def upload_as(run_jobs: Any) -> Any:
    """``upload_as(user, archive, **fields)`` posts a multipart upload with a fresh API token."""

    def upload(user: User, archive: Path, **fields: Any) -> Any:
        _, secret = token_create(actor=actor(user), name="upload")
        with archive.open("rb") as fh:
            return run_jobs(
                Client().post,
                "/api/v1/adapters/upload",
                {**fields, "archive": fh},
                headers={"Authorization": f"Bearer {secret}"},
            )

    return upload


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """A valid adapter outside the import roots: uploads need not be inside them."""
    return write_adapter_dir(tmp_path / "workstation" / "triage-lora")


@pytest.mark.parametrize("pack", [make_tar_gz, make_zip], ids=["tar.gz", "zip"])
def test_uploaded_adapter_archive_is_imported_and_staging_is_emptied(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any, pack: Any
) -> None:
    suffix = ".tar.gz" if pack is make_tar_gz else ".zip"
    archive = pack(source_dir, tmp_path / f"triage-lora{suffix}")

    response = upload_as(operator, archive, name="triage-lora", base_model_id=base.pk)

    assert response.status_code == 202, response.json()
    adapter = Adapter.objects.get(pk=response.json()["id"])
    assert adapter.status == "pending"
    assert adapter.source_path == f"upload:triage-lora{suffix}"
    assert adapter.storage == "copy"
    assert adapter.target_modules == ["q_proj", "v_proj"]
    for item in adapter.artifact.files:
        original = (source_dir / item["path"]).read_bytes()
        blob = ArtifactStore(Path(settings.APPLIANCE_ARTIFACT_ROOT)).blob_path(item["sha256"])
        assert blob.read_bytes() == original
    assert Job.objects.get(pk=response.json()["job"]["id"]).status == "succeeded"
    assert staging_entries() == []


def test_uploaded_archive_without_a_top_level_folder_is_accepted(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = tmp_path / "flat.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(source_dir.iterdir()):
            tf.add(path, arcname=path.name)
    response = upload_as(operator, archive, name="flat", base_model_id=base.pk)
    assert response.status_code == 202, response.json()
    assert Adapter.objects.get(name="flat").status == "pending"
    assert staging_entries() == []


def test_uploaded_archive_with_a_parent_traversal_member_is_refused(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source_dir, arcname="triage-lora")
        add_tar_member(tf, "../evil", b"escaped")
    before = registry_state()
    response = upload_as(operator, archive, name="evil", base_model_id=base.pk)
    assert_refused(response, 422, "unsafe_archive", before)
    assert staging_entries() == []
    assert not (Path(settings.APPLIANCE_STAGING_DIR).parent / "evil").exists()


def test_uploaded_zip_with_a_parent_traversal_member_is_refused(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = make_zip(source_dir, tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("triage-lora/../../evil", b"escaped")
    before = registry_state()
    response = upload_as(operator, archive, name="evil", base_model_id=base.pk)
    assert_refused(response, 422, "unsafe_archive", before)
    assert staging_entries() == []


def test_uploaded_tar_with_a_symlink_member_is_refused(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source_dir, arcname="triage-lora")
        link = tarfile.TarInfo("triage-lora/tokenizer.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    before = registry_state()
    response = upload_as(operator, archive, name="link", base_model_id=base.pk)
    assert_refused(response, 422, "unsafe_archive", before)
    assert staging_entries() == []


def test_uploaded_zip_with_a_symlink_member_is_refused(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = make_zip(source_dir, tmp_path / "link.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("triage-lora/tokenizer.json")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    before = registry_state()
    response = upload_as(operator, archive, name="link", base_model_id=base.pk)
    assert_refused(response, 422, "unsafe_archive", before)
    assert staging_entries() == []


def test_valid_archive_of_an_adapter_with_wrong_shapes_is_refused_and_staging_emptied(
    operator: User, base: BaseModel, tmp_path: Path, upload_as: Any
) -> None:
    source = write_adapter_dir(tmp_path / "workstation" / "bad", b_rows={"q_proj": 64})
    archive = make_tar_gz(source, tmp_path / "bad.tar.gz", top="bad")
    before = registry_state()
    response = upload_as(operator, archive, name="bad", base_model_id=base.pk)
    assert_refused(response, 422, "shape_mismatch", before)
    assert staging_entries() == []


def test_upload_with_a_duplicate_name_is_refused_and_staging_emptied(
    operator: User, imported: Adapter, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = make_zip(source_dir, tmp_path / "dup.zip")
    before = registry_state()
    response = upload_as(
        operator, archive, name="triage-lora", base_model_id=imported.base_model_id
    )
    assert_refused(response, 409, "duplicate_name", before)
    assert staging_entries() == []


def test_upload_for_a_retired_base_is_refused(
    operator: User, base: BaseModel, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    BaseModel.objects.filter(pk=base.pk).update(status="retired")
    archive = make_tar_gz(source_dir, tmp_path / "a.tar.gz")
    before = registry_state()
    response = upload_as(operator, archive, name="late", base_model_id=base.pk)
    assert_refused(response, 409, "base_not_usable", before)
    assert staging_entries() == []


def test_upload_for_an_unknown_base_is_404(
    operator: User, source_dir: Path, tmp_path: Path, upload_as: Any
) -> None:
    archive = make_tar_gz(source_dir, tmp_path / "a.tar.gz")
    before = registry_state()
    response = upload_as(operator, archive, name="orphan", base_model_id=4242)
    assert_refused(response, 404, "not_found", before)


def test_file_that_is_not_an_archive_is_refused(
    operator: User, base: BaseModel, tmp_path: Path, upload_as: Any
) -> None:
    archive = tmp_path / "adapter.tar.gz"
    archive.write_bytes(b"this is a text file, not an archive " * 10)
    before = registry_state()
    response = upload_as(operator, archive, name="text", base_model_id=base.pk)
    assert_refused(response, 422, "unsupported_archive", before)
    assert staging_entries() == []


def test_upload_over_the_size_limit_is_refused_with_413(
    operator: User,
    base: BaseModel,
    source_dir: Path,
    tmp_path: Path,
    upload_as: Any,
    settings: Any,
) -> None:
    settings.APPLIANCE_MAX_UPLOAD_BYTES = 2048
    (source_dir / "README.md").write_bytes(os.urandom(4096))  # incompressible
    archive = make_tar_gz(source_dir, tmp_path / "big.tar.gz")
    assert archive.stat().st_size > 2048
    before = registry_state()
    response = upload_as(operator, archive, name="big", base_model_id=base.pk)
    assert_refused(response, 413, "archive_too_large", before)
    assert staging_entries() == []


def test_small_upload_that_unpacks_over_the_limit_is_refused_with_413(
    operator: User,
    base: BaseModel,
    source_dir: Path,
    tmp_path: Path,
    upload_as: Any,
    settings: Any,
) -> None:
    settings.APPLIANCE_MAX_UPLOAD_BYTES = 2048
    (source_dir / "padding.bin").write_bytes(b"\0" * 200_000)  # compresses to almost nothing
    archive = make_tar_gz(source_dir, tmp_path / "bomb.tar.gz")
    assert archive.stat().st_size <= 2048
    before = registry_state()
    response = upload_as(operator, archive, name="bomb", base_model_id=base.pk)
    assert_refused(response, 413, "archive_too_large", before)
    assert staging_entries() == []


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_read_only_roles_may_not_upload_adapters(
    request: pytest.FixtureRequest,
    base: BaseModel,
    source_dir: Path,
    tmp_path: Path,
    upload_as: Any,
    role: str,
) -> None:
    archive = make_tar_gz(source_dir, tmp_path / "a.tar.gz")
    before = registry_state()
    response = upload_as(
        request.getfixturevalue(role), archive, name="sneaky", base_model_id=base.pk
    )
    assert_refused(response, 403, "permission_denied", before)
    assert staging_entries() == []


def test_anonymous_upload_is_refused_with_401(
    base: BaseModel, source_dir: Path, tmp_path: Path
) -> None:
    archive = make_tar_gz(source_dir, tmp_path / "a.tar.gz")
    before = registry_state()
    with archive.open("rb") as fh:
        response = Client().post(
            "/api/v1/adapters/upload", {"name": "anon", "base_model_id": base.pk, "archive": fh}
        )
    assert_refused(response, 401, "not_authenticated", before)


def test_upload_without_an_archive_is_refused(operator: User, base: BaseModel) -> None:
    _, secret = token_create(actor=actor(operator), name="upload")
    before = registry_state()
    response = Client().post(
        "/api/v1/adapters/upload",
        {"name": "nothing", "base_model_id": base.pk},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert_refused(response, 422, "validation_error", before)


# --- verification, retirement, listing -------------------------------------------------------


def test_tampered_adapter_blob_quarantines_every_adapter_sharing_it(
    api_as: Any,
    operator: User,
    base: BaseModel,
    imported: Adapter,
    adapter_dir: Path,
    import_root: Path,
    run_jobs: Any,
) -> None:
    twin_dir = import_root / "twin"
    shutil.copytree(adapter_dir, twin_dir)
    twin_id = post_adapter(api_as(operator), run_jobs, "twin", base.pk, twin_dir).data["id"]
    twin = Adapter.objects.get(pk=twin_id)
    assert twin.artifact_id == imported.artifact_id
    weights = next(f for f in imported.artifact.files if f["path"].endswith(".safetensors"))
    blob = ArtifactStore(Path(settings.APPLIANCE_ARTIFACT_ROOT)).blob_path(weights["sha256"])
    blob.chmod(0o600)
    with blob.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")

    response = run_jobs(api_as(operator).post, f"/adapters/{imported.pk}/verify")

    assert response.status_code == 202, response.data
    assert Job.objects.get(pk=response.data["id"]).status == "failed"
    assert set(Adapter.objects.values_list("status", flat=True)) == {"quarantined"}
    base.refresh_from_db()
    assert base.status == "pending"  # the base's files are not the adapter's
    assert AuditEvent.objects.filter(action="adapter.quarantine").count() == 2
    assert AuditEvent.objects.get(action="artifact.verify").outcome == "failure"


def test_verify_of_an_untouched_adapter_succeeds(
    api_as: Any, operator: User, imported: Adapter, run_jobs: Any
) -> None:
    response = run_jobs(api_as(operator).post, f"/adapters/{imported.pk}/verify")
    assert response.status_code == 202
    assert Job.objects.get(pk=response.data["id"]).status == "succeeded"
    imported.refresh_from_db()
    assert imported.status == "pending"
    assert AuditEvent.objects.get(action="artifact.verify").outcome == "success"


def test_operator_retires_an_adapter_and_cannot_retire_it_twice(
    api_as: Any, operator: User, imported: Adapter
) -> None:
    client = api_as(operator)
    response = client.post(f"/adapters/{imported.pk}/retire")
    assert response.status_code == 200, response.data
    assert response.data["status"] == "retired"
    assert AuditEvent.objects.get(action="adapter.retire").details["previous_status"] == "pending"
    before = registry_state()
    response = client.post(f"/adapters/{imported.pk}/retire")
    assert_refused(response, 409, "not_retirable", before)


def test_adapter_list_filters_by_base_status_and_name_and_paginates(
    api_as: Any, app_owner: User, base: BaseModel
) -> None:
    other = BaseModel.objects.create(
        name="other-base", status="approved", storage="copy", source_path="/x"
    )
    for name, model, status in [
        ("triage-a", base, "pending"),
        ("triage-b", base, "approved"),
        ("summary", base, "pending"),
        ("other-a", other, "pending"),
    ]:
        Adapter.objects.create(
            name=name,
            base_model=model,
            status=status,
            storage="copy",
            source_path="/x",
            rank=8,
            alpha=16,
        )
    client = api_as(app_owner)

    def names(query: str) -> list[str]:
        return [a["name"] for a in client.get(f"/adapters{query}").data["items"]]

    assert client.get("/adapters").data["count"] == 4
    assert names(f"?base_model_id={base.pk}") == ["summary", "triage-a", "triage-b"]
    assert names(f"?base_model_id={other.pk}") == ["other-a"]
    assert names("?status=approved") == ["triage-b"]
    assert names("?q=triage") == ["triage-a", "triage-b"]
    assert names(f"?q=triage&status=pending&base_model_id={base.pk}") == ["triage-a"]
    page = client.get("/adapters?limit=1&offset=1").data
    assert (page["count"], [a["name"] for a in page["items"]]) == (4, ["summary"])
