"""Base models through the API: import (copy and reference), permissions, four-eyes approval,
verification and quarantine, retirement, listing, and the jobs that do the work."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.models import Job
from appliance.registry.models import Adapter, Artifact, BaseModel
from appliance.registry.store import ArtifactStore, manifest_digest
from tests.support import (
    assert_refused,
    blob_files,
    registry_state,
    write_model_dir,
)

pytestmark = pytest.mark.django_db

ROLES = ["admin", "admin2", "operator", "auditor", "app_owner"]


# --- helpers ---------------------------------------------------------------------------------


def denials() -> int:
    return AuditEvent.objects.filter(action="permission.denied").count()


@pytest.fixture
def model_dir(import_root: Path) -> Path:
    return write_model_dir(import_root / "tiny-llama")


@pytest.fixture
def imported(api_as: Any, admin: User, model_dir: Path, run_jobs: Any) -> BaseModel:
    """A pending model imported (copied) by alice."""
    response = run_jobs(
        api_as(admin).post, "/models", {"name": "tiny-llama", "path": str(model_dir)}
    )
    assert response.status_code == 202, response.data
    return BaseModel.objects.get(pk=response.data["id"])


def post_import(client: Any, run_jobs: Any, name: str, path: Path | str, **extra: Any) -> Any:
    return run_jobs(client.post, "/models", {"name": name, "path": str(path), **extra})


# --- import ----------------------------------------------------------------------------------


def test_model_import_answers_202_and_the_job_leaves_it_pending_with_hashed_copied_files(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any
) -> None:
    response = post_import(api_as(admin), run_jobs, "tiny-llama", model_dir)

    assert response.status_code == 202
    assert response.data["name"] == "tiny-llama"
    assert response.data["status"] == "importing"
    assert response.data["job"]["status"] == "queued"
    model = BaseModel.objects.get(pk=response.data["id"])
    assert model.status == "pending"
    assert model.imported_by == admin
    assert model.storage == "copy"
    assert model.source_path == str(model_dir.resolve())
    assert (model.family, model.architecture) == ("llama", "LlamaForCausalLM")
    assert model.context_length == 512
    assert model.parameter_count == 300 * 128 + 2 * 128 * 128

    artifact = model.artifact
    assert artifact is not None
    on_disk = sorted(p.name for p in model_dir.iterdir())
    assert [f["path"] for f in artifact.files] == on_disk
    for item in artifact.files:
        data = (model_dir / item["path"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["size"] == len(data)
        blob = Path(settings.APPLIANCE_ARTIFACT_ROOT) / "blobs/sha256" / item["sha256"][:2]
        assert (blob / item["sha256"]).read_bytes() == data
    assert len(blob_files()) == len(on_disk)
    assert artifact.total_bytes == sum(f["size"] for f in artifact.files)
    assert artifact.digest == manifest_digest(artifact.files)
    assert artifact.location == ""
    assert artifact.verified_at is not None

    job = Job.objects.get(pk=response.data["job"]["id"])
    assert (job.kind, job.status, job.error) == ("artifact_import", "succeeded", "")
    assert (job.object_type, job.object_id) == ("model", str(model.pk))
    assert job.progress == 1.0
    assert job.progress_done == job.progress_total == artifact.total_bytes
    assert any("hashing 4 files" in line for line in job.log)

    started = AuditEvent.objects.get(action="model.import")
    assert started.object_id == str(model.pk)
    assert started.actor_kind == "token"
    assert started.details["name"] == "tiny-llama"
    assert started.details["job"] == str(job.id)
    complete = AuditEvent.objects.get(action="model.import_complete")
    assert complete.outcome == "success"
    assert complete.details["digest"] == artifact.digest
    assert complete.details["reused"] is False

    shown = api_as(admin).get(f"/models/{model.pk}").data
    assert shown["status"] == "pending"
    assert shown["imported_by"] == "alice"
    assert shown["artifact"]["digest"] == artifact.digest
    assert shown["artifact"]["files"] == artifact.files


def test_reference_import_hashes_files_in_place_and_stores_no_blobs(
    api_as: Any, operator: User, model_dir: Path, run_jobs: Any
) -> None:
    response = post_import(api_as(operator), run_jobs, "ref", model_dir, storage="reference")

    assert response.status_code == 202
    model = BaseModel.objects.get(pk=response.data["id"])
    assert model.status == "pending"
    assert model.storage == "reference"
    assert model.artifact is not None
    assert model.artifact.storage == "reference"
    assert model.artifact.location == str(model_dir.resolve())
    for item in model.artifact.files:
        assert item["sha256"] == hashlib.sha256((model_dir / item["path"]).read_bytes()).hexdigest()
    assert blob_files() == []
    assert Job.objects.get(pk=response.data["job"]["id"]).status == "succeeded"


def test_reimporting_the_same_files_under_another_name_reuses_the_artifact_and_blobs(
    api_as: Any, admin: User, imported: BaseModel, model_dir: Path, import_root: Path, run_jobs: Any
) -> None:
    blobs_before = blob_files()
    copy_dir = import_root / "copy-of-tiny-llama"
    shutil.copytree(model_dir, copy_dir)

    response = post_import(api_as(admin), run_jobs, "tiny-llama-again", copy_dir)

    assert response.status_code == 202
    again = BaseModel.objects.get(pk=response.data["id"])
    assert again.status == "pending"
    assert again.artifact_id == imported.artifact_id
    assert Artifact.objects.count() == 1
    assert blob_files() == blobs_before
    complete = AuditEvent.objects.get(action="model.import_complete", object_id=str(again.pk))
    assert complete.details["reused"] is True


def test_duplicate_model_name_is_refused_with_409(
    api_as: Any, admin: User, imported: BaseModel, model_dir: Path, run_jobs: Any
) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "tiny-llama", model_dir)
    assert_refused(response, 409, "duplicate_name", before)


def test_path_outside_the_import_roots_is_refused(
    api_as: Any, admin: User, tmp_path: Path, run_jobs: Any
) -> None:
    outside = write_model_dir(tmp_path / "elsewhere" / "model")
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "outside", outside)
    assert_refused(response, 422, "path_not_allowed", before)
    assert "path" in response.data["fields"]


def test_dotdot_path_escaping_the_import_root_is_refused(
    api_as: Any, admin: User, tmp_path: Path, import_root: Path, run_jobs: Any
) -> None:
    write_model_dir(tmp_path / "elsewhere")
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "escape", f"{import_root}/../elsewhere")
    assert_refused(response, 422, "path_not_allowed", before)


def test_symlink_inside_the_import_root_pointing_outside_is_refused(
    api_as: Any, admin: User, tmp_path: Path, import_root: Path, run_jobs: Any
) -> None:
    outside = write_model_dir(tmp_path / "elsewhere")
    (import_root / "innocent").symlink_to(outside, target_is_directory=True)
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "linked", import_root / "innocent")
    assert_refused(response, 422, "path_not_allowed", before)


def test_model_dir_with_a_file_linking_outside_is_refused(
    api_as: Any, admin: User, model_dir: Path, tmp_path: Path, run_jobs: Any
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the registry")
    (model_dir / "notes.txt").symlink_to(secret)
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "leaky", model_dir)
    assert_refused(response, 422, "unsafe_path", before)


def test_relative_path_is_refused(api_as: Any, admin: User, model_dir: Path, run_jobs: Any) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "relative", "import/tiny-llama")
    assert_refused(response, 422, "validation_error", before)
    assert "path" in response.data["fields"]


def test_path_that_is_not_a_directory_is_refused(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any
) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "file", model_dir / "config.json")
    assert_refused(response, 422, "not_a_directory", before)


@pytest.mark.parametrize(
    ("remove", "add", "code"),
    [
        (["config.json"], [], "missing_file"),
        (["tokenizer.json", "tokenizer_config.json"], [], "missing_tokenizer"),
        (["model.safetensors"], ["pytorch_model.bin"], "no_safetensors"),
        (["model.safetensors"], [], "no_safetensors"),
    ],
)
def test_incomplete_model_dir_is_refused_with_the_inspection_code(
    api_as: Any,
    admin: User,
    model_dir: Path,
    run_jobs: Any,
    remove: list[str],
    add: list[str],
    code: str,
) -> None:
    for name in remove:
        (model_dir / name).unlink()
    for name in add:
        (model_dir / name).write_bytes(b"\x80\x02not really a pickle")
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "incomplete", model_dir)
    assert_refused(response, 422, code, before)


def test_truncated_safetensors_is_refused(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any
) -> None:
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "truncated", model_dir)
    assert_refused(response, 422, "bad_safetensors", before)


@pytest.mark.parametrize(
    "extra", [{"status": "approved"}, {"imported_by": "bob"}, {"artifact_id": 1}]
)
def test_unknown_field_in_the_import_body_is_refused(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any, extra: dict[str, Any]
) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "mass-assign", model_dir, **extra)
    assert_refused(response, 422, "validation_error", before)
    assert set(extra) <= set(response.data["fields"])


@pytest.mark.parametrize("name", ["has space", "-leading-dash", "", "x" * 101, "a/b"])
def test_model_name_that_is_not_a_served_model_name_is_refused(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any, name: str
) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, name, model_dir)
    assert_refused(response, 422, "validation_error", before)
    assert "name" in response.data["fields"]


def test_unknown_storage_mode_is_refused(
    api_as: Any, admin: User, model_dir: Path, run_jobs: Any
) -> None:
    before = registry_state()
    response = post_import(api_as(admin), run_jobs, "m", model_dir, storage="symlink")
    assert_refused(response, 422, "validation_error", before)


# --- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operator_and_admin_may_import_models(
    request: pytest.FixtureRequest, api_as: Any, model_dir: Path, run_jobs: Any, role: str
) -> None:
    user = request.getfixturevalue(role)
    response = post_import(api_as(user), run_jobs, f"by-{role}", model_dir)
    assert response.status_code == 202
    model = BaseModel.objects.get(pk=response.data["id"])
    assert (model.status, model.imported_by) == ("pending", user)


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_auditor_and_app_owner_may_not_import_models(
    request: pytest.FixtureRequest, api_as: Any, model_dir: Path, run_jobs: Any, role: str
) -> None:
    user = request.getfixturevalue(role)
    client = api_as(user)
    before = registry_state()
    response = post_import(client, run_jobs, "sneaky", model_dir)
    assert_refused(response, 403, "permission_denied", before)
    denial = AuditEvent.objects.get(action="permission.denied")
    assert denial.outcome == "denied"
    assert denial.actor_label.startswith(user.username)
    assert denial.details["path"] == "/api/v1/models"


def test_anonymous_import_is_refused_with_401(api_as: Any, model_dir: Path, run_jobs: Any) -> None:
    before = registry_state()
    response = post_import(api_as(None), run_jobs, "anon", model_dir)
    assert_refused(response, 401, "not_authenticated", before)


@pytest.mark.parametrize("role", ROLES)
def test_every_signed_in_role_may_list_and_read_models_and_adapters(
    request: pytest.FixtureRequest, api_as: Any, imported: BaseModel, role: str
) -> None:
    adapter = Adapter.objects.create(
        name="lora",
        storage="copy",
        source_path="/x",
        base_model=imported,
        rank=8,
        alpha=16,
        status="pending",
    )
    client = api_as(request.getfixturevalue(role))
    assert client.get("/models").data["items"][0]["name"] == "tiny-llama"
    assert client.get(f"/models/{imported.pk}").data["id"] == imported.pk
    assert client.get("/adapters").data["items"][0]["name"] == "lora"
    shown = client.get(f"/adapters/{adapter.pk}").data
    assert (shown["base_model_id"], shown["base_model_name"]) == (imported.pk, "tiny-llama")


def test_anonymous_may_not_list_or_read_models(api_as: Any, imported: BaseModel) -> None:
    client = api_as(None)
    assert client.get("/models").status_code == 401
    assert client.get(f"/models/{imported.pk}").status_code == 401
    assert client.get("/adapters").status_code == 401


def test_unknown_model_id_is_404(api_as: Any, operator: User) -> None:
    response = api_as(operator).get("/models/9999")
    assert (response.status_code, response.data["code"]) == (404, "not_found")


# --- approval --------------------------------------------------------------------------------


def test_importer_may_not_approve_their_own_model_even_as_admin(
    api_as: Any, admin: User, imported: BaseModel
) -> None:
    before = registry_state()
    response = api_as(admin).post(f"/models/{imported.pk}/approve")
    assert_refused(response, 403, "four_eyes", before)
    imported.refresh_from_db()
    assert (imported.status, imported.approved_by) == ("pending", None)
    assert AuditEvent.objects.get(action="permission.denied").details["code"] == "four_eyes"


def test_second_admin_approves_a_pending_model(
    api_as: Any, admin2: User, imported: BaseModel
) -> None:
    response = api_as(admin2).post(f"/models/{imported.pk}/approve")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "approved"
    assert response.data["approved_by"] == "bob"
    imported.refresh_from_db()
    assert imported.status == "approved"
    assert imported.approved_by == admin2
    assert imported.approved_at is not None
    event = AuditEvent.objects.get(action="model.approve")
    assert event.object_id == str(imported.pk)
    assert event.actor_label.startswith("bob")
    assert event.details["digest"] == imported.artifact.digest


def test_approving_a_model_that_is_not_pending_is_refused(
    api_as: Any, admin2: User, imported: BaseModel
) -> None:
    assert api_as(admin2).post(f"/models/{imported.pk}/approve").status_code == 200
    before = registry_state()
    response = api_as(admin2).post(f"/models/{imported.pk}/approve")
    assert_refused(response, 409, "not_pending", before)


@pytest.mark.parametrize("role", ["operator", "auditor", "app_owner"])
def test_only_admins_may_approve_models(
    request: pytest.FixtureRequest, api_as: Any, imported: BaseModel, role: str
) -> None:
    before = registry_state()
    response = api_as(request.getfixturevalue(role)).post(f"/models/{imported.pk}/approve")
    assert_refused(response, 403, "permission_denied", before)
    assert denials() == 1


def test_model_still_importing_cannot_be_approved(
    api_as: Any, admin: User, admin2: User, model_dir: Path
) -> None:
    # No on_commit here: the import job never ran, so the model is still importing.
    response = api_as(admin).post("/models", {"name": "slow", "path": str(model_dir)})
    before = registry_state()
    response = api_as(admin2).post(f"/models/{response.data['id']}/approve")
    assert_refused(response, 409, "not_pending", before)


def test_approving_an_unknown_model_is_404(api_as: Any, admin2: User) -> None:
    before = registry_state()
    response = api_as(admin2).post("/models/4242/approve")
    assert_refused(response, 404, "not_found", before)


# --- verification and quarantine -------------------------------------------------------------


def flip_first_byte(path: Path) -> None:
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def blob_of(model: BaseModel, name: str) -> Path:
    item = next(f for f in model.artifact.files if f["path"] == name)
    return ArtifactStore(Path(settings.APPLIANCE_ARTIFACT_ROOT)).blob_path(item["sha256"])


def test_verify_of_untouched_files_succeeds(
    api_as: Any, operator: User, imported: BaseModel, run_jobs: Any
) -> None:
    stamped = imported.artifact.verified_at
    response = run_jobs(api_as(operator).post, f"/models/{imported.pk}/verify")

    assert response.status_code == 202, response.data
    assert response.data["kind"] == "artifact_verify"
    assert response.data["status"] == "queued"
    job = Job.objects.get(pk=response.data["id"])
    assert (job.status, job.error, job.progress) == ("succeeded", "", 1.0)
    imported.refresh_from_db()
    assert imported.status == "pending"
    assert imported.artifact.verified_at > stamped
    requested = AuditEvent.objects.get(action="model.verify")
    assert requested.details["job"] == str(job.id)
    checked = AuditEvent.objects.get(action="artifact.verify")
    assert (checked.outcome, checked.object_id) == ("success", str(imported.artifact_id))
    assert not AuditEvent.objects.filter(action="model.quarantine").exists()


def test_tampered_blob_fails_verify_and_quarantines_every_model_sharing_it(
    api_as: Any,
    admin: User,
    admin2: User,
    imported: BaseModel,
    model_dir: Path,
    import_root: Path,
    run_jobs: Any,
) -> None:
    twin_dir = import_root / "twin"
    shutil.copytree(model_dir, twin_dir)
    twin_id = post_import(api_as(admin), run_jobs, "twin", twin_dir).data["id"]
    assert api_as(admin2).post(f"/models/{twin_id}/approve").status_code == 200
    flip_first_byte(blob_of(imported, "model.safetensors"))

    response = run_jobs(api_as(admin).post, f"/models/{imported.pk}/verify")

    assert response.status_code == 202
    job = Job.objects.get(pk=response.data["id"])
    assert job.status == "failed"
    assert job.error == "1 file(s) do not match"
    assert any("model.safetensors: sha256" in line for line in job.log)
    assert set(BaseModel.objects.values_list("status", flat=True)) == {"quarantined"}
    imported.refresh_from_db()
    assert imported.artifact.verified_at is None
    failure = AuditEvent.objects.get(action="artifact.verify")
    assert failure.outcome == "failure"
    assert failure.details["problems"][0].startswith("model.safetensors: sha256")
    quarantined = AuditEvent.objects.filter(action="model.quarantine")
    assert sorted(quarantined.values_list("object_id", flat=True)) == sorted(
        [str(imported.pk), str(twin_id)]
    )


def test_missing_blob_fails_verify_and_quarantines_the_model(
    api_as: Any, operator: User, imported: BaseModel, run_jobs: Any
) -> None:
    blob_of(imported, "config.json").unlink()
    response = run_jobs(api_as(operator).post, f"/models/{imported.pk}/verify")
    job = Job.objects.get(pk=response.data["id"])
    assert job.status == "failed"
    assert any("config.json: missing" in line for line in job.log)
    imported.refresh_from_db()
    assert imported.status == "quarantined"


@pytest.fixture
def referenced(api_as: Any, admin: User, model_dir: Path, run_jobs: Any) -> BaseModel:
    """A pending model imported by reference (files stay in model_dir)."""
    response = post_import(api_as(admin), run_jobs, "by-ref", model_dir, storage="reference")
    return BaseModel.objects.get(pk=response.data["id"])


def test_changed_referenced_file_fails_verify_and_quarantines_the_model(
    api_as: Any, operator: User, referenced: BaseModel, model_dir: Path, run_jobs: Any
) -> None:
    flip_first_byte(model_dir / "tokenizer.json")
    response = run_jobs(api_as(operator).post, f"/models/{referenced.pk}/verify")

    job = Job.objects.get(pk=response.data["id"])
    assert job.status == "failed"
    assert any("tokenizer.json: sha256" in line for line in job.log)
    referenced.refresh_from_db()
    assert referenced.status == "quarantined"
    assert AuditEvent.objects.get(action="artifact.verify").outcome == "failure"
    assert AuditEvent.objects.get(action="model.quarantine").object_id == str(referenced.pk)


def test_extra_file_in_a_referenced_directory_is_reported_and_quarantines(
    api_as: Any, operator: User, referenced: BaseModel, model_dir: Path, run_jobs: Any
) -> None:
    (model_dir / "extra.safetensors").write_bytes(b"sneaked in later")
    response = run_jobs(api_as(operator).post, f"/models/{referenced.pk}/verify")

    job = Job.objects.get(pk=response.data["id"])
    assert job.status == "failed"
    assert any("extra.safetensors: unexpected file" in line for line in job.log)
    referenced.refresh_from_db()
    assert referenced.status == "quarantined"
    problems = AuditEvent.objects.get(action="artifact.verify").details["problems"]
    assert problems == ["extra.safetensors: unexpected file"]


def test_quarantined_model_cannot_be_approved(
    api_as: Any, operator: User, admin2: User, imported: BaseModel, run_jobs: Any
) -> None:
    flip_first_byte(blob_of(imported, "config.json"))
    run_jobs(api_as(operator).post, f"/models/{imported.pk}/verify")
    imported.refresh_from_db()
    assert imported.status == "quarantined"
    before = registry_state()
    response = api_as(admin2).post(f"/models/{imported.pk}/approve")
    assert_refused(response, 409, "not_pending", before)


def test_approved_model_is_quarantined_when_its_files_change(
    api_as: Any, operator: User, admin2: User, imported: BaseModel, run_jobs: Any
) -> None:
    assert api_as(admin2).post(f"/models/{imported.pk}/approve").status_code == 200
    flip_first_byte(blob_of(imported, "model.safetensors"))
    run_jobs(api_as(operator).post, f"/models/{imported.pk}/verify")
    imported.refresh_from_db()
    assert imported.status == "quarantined"


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_read_only_roles_may_not_verify(
    request: pytest.FixtureRequest, api_as: Any, imported: BaseModel, run_jobs: Any, role: str
) -> None:
    before = registry_state()
    response = run_jobs(api_as(request.getfixturevalue(role)).post, f"/models/{imported.pk}/verify")
    assert_refused(response, 403, "permission_denied", before)


def test_retired_model_cannot_be_verified(
    api_as: Any, operator: User, imported: BaseModel, run_jobs: Any
) -> None:
    assert api_as(operator).post(f"/models/{imported.pk}/retire").status_code == 200
    before = registry_state()
    response = run_jobs(api_as(operator).post, f"/models/{imported.pk}/verify")
    assert_refused(response, 409, "not_verifiable", before)


# --- retirement ------------------------------------------------------------------------------


@pytest.mark.parametrize("approve_first", [False, True])
def test_operator_retires_a_pending_or_approved_model(
    api_as: Any, operator: User, admin2: User, imported: BaseModel, approve_first: bool
) -> None:
    if approve_first:
        assert api_as(admin2).post(f"/models/{imported.pk}/approve").status_code == 200
    previous = "approved" if approve_first else "pending"

    response = api_as(operator).post(f"/models/{imported.pk}/retire")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "retired"
    imported.refresh_from_db()
    assert imported.status == "retired"
    assert imported.retired_at is not None
    event = AuditEvent.objects.get(action="model.retire")
    assert event.details["previous_status"] == previous
    assert event.actor_label.startswith("olga")


def test_retiring_a_model_twice_is_refused(
    api_as: Any, operator: User, imported: BaseModel
) -> None:
    assert api_as(operator).post(f"/models/{imported.pk}/retire").status_code == 200
    before = registry_state()
    response = api_as(operator).post(f"/models/{imported.pk}/retire")
    assert_refused(response, 409, "not_retirable", before)


def test_retired_model_cannot_be_approved(
    api_as: Any, operator: User, admin2: User, imported: BaseModel
) -> None:
    api_as(operator).post(f"/models/{imported.pk}/retire")
    before = registry_state()
    response = api_as(admin2).post(f"/models/{imported.pk}/approve")
    assert_refused(response, 409, "not_pending", before)


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_read_only_roles_may_not_retire(
    request: pytest.FixtureRequest, api_as: Any, imported: BaseModel, role: str
) -> None:
    before = registry_state()
    response = api_as(request.getfixturevalue(role)).post(f"/models/{imported.pk}/retire")
    assert_refused(response, 403, "permission_denied", before)


# --- listing ---------------------------------------------------------------------------------


def make_model(name: str, status: str) -> BaseModel:
    return BaseModel.objects.create(
        name=name, status=status, storage="copy", source_path=f"/import/{name}"
    )


def test_model_list_filters_by_status_and_name_and_paginates(api_as: Any, auditor: User) -> None:
    make_model("llama-3-8b", "pending")
    make_model("llama-3-70b", "approved")
    make_model("mistral-7b", "pending")
    make_model("qwen-14b", "retired")
    client = api_as(auditor)

    everything = client.get("/models").data
    assert everything["count"] == 4
    assert [m["name"] for m in everything["items"]] == [
        "llama-3-70b",
        "llama-3-8b",
        "mistral-7b",
        "qwen-14b",
    ]
    pending = client.get("/models?status=pending").data
    assert [m["name"] for m in pending["items"]] == ["llama-3-8b", "mistral-7b"]
    assert pending["count"] == 2
    assert [m["name"] for m in client.get("/models?q=LLAMA").data["items"]] == [
        "llama-3-70b",
        "llama-3-8b",
    ]
    both = client.get("/models?q=llama&status=approved").data
    assert [m["name"] for m in both["items"]] == ["llama-3-70b"]
    page = client.get("/models?limit=2&offset=2").data
    assert page["count"] == 4
    assert [m["name"] for m in page["items"]] == ["mistral-7b", "qwen-14b"]


def test_model_list_refuses_an_unknown_status_filter(api_as: Any, auditor: User) -> None:
    response = api_as(auditor).get("/models?status=deleted")
    assert (response.status_code, response.data["code"]) == (422, "validation_error")


# --- jobs ------------------------------------------------------------------------------------


def test_import_job_shows_its_progress_and_log(
    api_as: Any, operator: User, model_dir: Path, run_jobs: Any
) -> None:
    job_id = post_import(api_as(operator), run_jobs, "tracked", model_dir).data["job"]["id"]
    response = api_as(operator).get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.data
    assert response.data["id"] == job_id
    assert response.data["status"] == "succeeded"
    assert response.data["progress"] == 1.0
    assert response.data["progress_total"] > 0
    assert any("hashing 4 files" in line for line in response.data["log"])
    assert any("artifact sha256:" in line for line in response.data["log"])


def test_app_owner_may_not_read_jobs(
    api_as: Any, operator: User, app_owner: User, model_dir: Path, run_jobs: Any
) -> None:
    job_id = post_import(api_as(operator), run_jobs, "tracked", model_dir).data["job"]["id"]
    response = api_as(app_owner).get(f"/jobs/{job_id}")
    assert (response.status_code, response.data["code"]) == (403, "permission_denied")
    assert denials() == 1
