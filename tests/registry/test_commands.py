"""The import_model and import_adapter management commands: same services as the API, acting as a
named user, and a CommandError that says why when something is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.models import Job
from appliance.registry.models import Adapter, Artifact, BaseModel
from tests.support import write_adapter_dir, write_model_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks: Any) -> Any:
    """Call something and then run the jobs it queued (on_commit callbacks), as a commit would."""

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return call


def staging_entries() -> list[Path]:
    staging = Path(settings.APPLIANCE_STAGING_DIR)
    return sorted(staging.iterdir()) if staging.exists() else []


def counts() -> dict[str, int]:
    return {
        "models": BaseModel.objects.count(),
        "adapters": Adapter.objects.count(),
        "artifacts": Artifact.objects.count(),
        "jobs": Job.objects.count(),
        "audit": AuditEvent.objects.exclude(action="permission.denied").count(),
    }


@pytest.fixture
def model_dir(import_root: Path) -> Path:
    return write_model_dir(import_root / "tiny-llama")


@pytest.fixture
def base(operator: User, model_dir: Path, run_jobs: Any) -> BaseModel:
    run_jobs(call_command, "import_model", str(model_dir), name="tiny-llama", username="olga")
    return BaseModel.objects.get(name="tiny-llama")


def make_tar_gz(source: Path, dest: Path, top: str) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(source, arcname=top)
    return dest


# --- import_model ----------------------------------------------------------------------------


def test_import_model_command_imports_as_the_named_user(
    operator: User, model_dir: Path, run_jobs: Any
) -> None:
    out = io.StringIO()
    run_jobs(
        call_command,
        "import_model",
        str(model_dir),
        name="tiny-llama",
        username="olga",
        licence="llama3",
        source="vendor",
        stdout=out,
    )

    model = BaseModel.objects.get(name="tiny-llama")
    assert model.status == "pending"
    assert model.imported_by == operator
    assert (model.licence, model.source, model.storage) == ("llama3", "vendor", "copy")
    assert f"model {model.pk} tiny-llama:" in out.getvalue()
    event = AuditEvent.objects.get(action="model.import")
    assert event.actor_label == "olga (cli)"
    assert event.actor_id == str(operator.pk)
    assert Job.objects.get().status == "succeeded"


def test_import_model_command_accepts_reference_storage(
    operator: User, model_dir: Path, run_jobs: Any
) -> None:
    run_jobs(
        call_command,
        "import_model",
        str(model_dir),
        name="by-ref",
        username="olga",
        storage="reference",
    )
    model = BaseModel.objects.get(name="by-ref")
    assert (model.status, model.storage) == ("pending", "reference")
    assert model.artifact.location == str(model_dir.resolve())


def test_import_model_command_as_an_unknown_user_fails(model_dir: Path, run_jobs: Any) -> None:
    before = counts()
    with pytest.raises(CommandError, match="No active user named 'nobody'"):
        run_jobs(call_command, "import_model", str(model_dir), name="m", username="nobody")
    assert counts() == before


def test_import_model_command_as_an_inactive_user_fails(
    operator: User, model_dir: Path, run_jobs: Any
) -> None:
    User.objects.filter(pk=operator.pk).update(is_active=False)
    before = counts()
    with pytest.raises(CommandError, match="No active user named 'olga'"):
        run_jobs(call_command, "import_model", str(model_dir), name="m", username="olga")
    assert counts() == before


def test_import_model_command_with_a_bad_directory_fails_with_the_reason(
    operator: User, model_dir: Path, run_jobs: Any
) -> None:
    (model_dir / "config.json").unlink()
    before = counts()
    with pytest.raises(CommandError, match=r"no config\.json\. \[missing_file\]"):
        run_jobs(call_command, "import_model", str(model_dir), name="m", username="olga")
    assert counts() == before


def test_import_model_command_outside_the_import_roots_fails_with_the_reason(
    operator: User, tmp_path: Path, run_jobs: Any
) -> None:
    outside = write_model_dir(tmp_path / "elsewhere")
    before = counts()
    with pytest.raises(CommandError, match=r"\[path_not_allowed\] \(path: Not inside"):
        run_jobs(call_command, "import_model", str(outside), name="m", username="olga")
    assert counts() == before


def test_import_model_command_refuses_a_role_that_may_not_import(
    auditor: User, model_dir: Path, run_jobs: Any
) -> None:
    before = counts()
    with pytest.raises(CommandError, match=r"\[permission_denied\]"):
        run_jobs(call_command, "import_model", str(model_dir), name="m", username="audrey")
    assert counts() == before


def test_import_model_command_refuses_a_taken_name(
    base: BaseModel, model_dir: Path, run_jobs: Any
) -> None:
    before = counts()
    with pytest.raises(CommandError, match=r"\[duplicate_name\]"):
        run_jobs(call_command, "import_model", str(model_dir), name="tiny-llama", username="olga")
    assert counts() == before


# --- import_adapter --------------------------------------------------------------------------


def test_import_adapter_command_imports_an_archive_file(
    base: BaseModel, tmp_path: Path, run_jobs: Any
) -> None:
    source = write_adapter_dir(tmp_path / "src" / "triage-lora")
    archive = make_tar_gz(source, tmp_path / "triage-lora.tar.gz", "triage-lora")
    out = io.StringIO()

    run_jobs(
        call_command,
        "import_adapter",
        str(archive),
        name="triage-lora",
        base="tiny-llama",
        username="olga",
        stdout=out,
    )

    adapter = Adapter.objects.get(name="triage-lora")
    assert adapter.status == "pending"
    assert adapter.base_model == base
    assert adapter.source_path == "upload:triage-lora.tar.gz"
    assert adapter.imported_by.username == "olga"
    assert f"adapter {adapter.pk} triage-lora:" in out.getvalue()
    assert AuditEvent.objects.get(action="adapter.import").actor_label == "olga (cli)"
    assert staging_entries() == []


def test_import_adapter_command_imports_a_directory(
    base: BaseModel, import_root: Path, run_jobs: Any
) -> None:
    directory = write_adapter_dir(import_root / "triage-lora")
    run_jobs(
        call_command,
        "import_adapter",
        str(directory),
        name="triage-lora",
        base="tiny-llama",
        username="olga",
        storage="reference",
    )
    adapter = Adapter.objects.get(name="triage-lora")
    assert (adapter.status, adapter.storage) == ("pending", "reference")


def test_import_adapter_command_with_an_unknown_base_fails(
    operator: User, tmp_path: Path, run_jobs: Any
) -> None:
    source = write_adapter_dir(tmp_path / "src" / "lora")
    archive = make_tar_gz(source, tmp_path / "lora.tar.gz", "lora")
    before = counts()
    with pytest.raises(CommandError, match="No base model named 'missing'"):
        run_jobs(
            call_command,
            "import_adapter",
            str(archive),
            name="lora",
            base="missing",
            username="olga",
        )
    assert counts() == before


def test_import_adapter_command_as_an_unknown_user_fails(
    base: BaseModel, tmp_path: Path, run_jobs: Any
) -> None:
    source = write_adapter_dir(tmp_path / "src" / "lora")
    archive = make_tar_gz(source, tmp_path / "lora.tar.gz", "lora")
    before = counts()
    with pytest.raises(CommandError, match="No active user"):
        run_jobs(
            call_command,
            "import_adapter",
            str(archive),
            name="lora",
            base="tiny-llama",
            username="mallory",
        )
    assert counts() == before


def test_import_adapter_command_refuses_an_unsafe_archive_and_leaves_no_staging(
    base: BaseModel, tmp_path: Path, run_jobs: Any
) -> None:
    source = write_adapter_dir(tmp_path / "src" / "lora")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname="lora")
        info = tarfile.TarInfo("../evil")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    before = counts()
    with pytest.raises(CommandError, match=r"'\.\.' path component\. \[unsafe_archive\]"):
        run_jobs(
            call_command,
            "import_adapter",
            str(archive),
            name="lora",
            base="tiny-llama",
            username="olga",
        )
    assert counts() == before
    assert staging_entries() == []


def test_import_adapter_command_refuses_wrong_shapes_with_the_reason(
    base: BaseModel, tmp_path: Path, run_jobs: Any
) -> None:
    source = write_adapter_dir(tmp_path / "src" / "lora", b_rows={"v_proj": 96})
    archive = make_tar_gz(source, tmp_path / "lora.tar.gz", "lora")
    before = counts()
    with pytest.raises(CommandError, match=r"expected \[64, 8\].*\[shape_mismatch\]"):
        run_jobs(
            call_command,
            "import_adapter",
            str(archive),
            name="lora",
            base="tiny-llama",
            username="olga",
        )
    assert counts() == before
    assert staging_entries() == []
