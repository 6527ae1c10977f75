"""The console's models and adapters pages: lists with filters, detail pages, import with live
progress, verify, approve (four eyes) and retire, each with its permissions per role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.choices import JobKind, JobStatus
from appliance.core.models import Job
from appliance.fleet.models import Deployment
from appliance.registry import services
from appliance.registry.models import Adapter, BaseModel
from appliance.registry.tasks import ingest_artifact
from tests.conftest import actor
from tests.support import registry_state, write_adapter_dir, write_model_dir

pytestmark = pytest.mark.django_db

VIEWERS = ["admin", "operator", "auditor", "app_owner"]
WRITERS = ["admin", "operator"]
READ_ONLY = ["auditor", "app_owner"]


# --- set-up ----------------------------------------------------------------------------------


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    """Call something, then run the jobs it queued on commit (Celery is eager in tests)."""

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return call


@pytest.fixture
def model(admin: User, import_root: Path, committed: Any) -> BaseModel:
    """A pending model imported (copied and hashed) by alice, the first admin."""
    directory = write_model_dir(import_root / "tiny-llama")
    imported, _ = committed(
        services.model_import, actor=actor(admin), name="tiny-llama", path=str(directory)
    )
    imported.refresh_from_db()
    assert imported.status == "pending"
    return imported


@pytest.fixture
def approved(model: BaseModel, admin2: User) -> BaseModel:
    services.entry_approve(actor=actor(admin2), entry=model)
    return model


@pytest.fixture
def adapter(approved: BaseModel, admin: User, import_root: Path, committed: Any) -> Adapter:
    """A pending adapter of the approved model, imported by alice."""
    directory = write_adapter_dir(import_root / "triage-lora")
    imported, _ = committed(
        services.adapter_import,
        actor=actor(admin),
        name="triage-lora",
        base_model=approved,
        path=str(directory),
    )
    imported.refresh_from_db()
    assert imported.status == "pending"
    return imported


def url(name: str, *args: Any) -> str:
    return reverse(f"console:{name}", args=args)


def audited(action: str, user: User, object_id: int) -> bool:
    """The action is in the audit log with this person as the actor."""
    return AuditEvent.objects.filter(
        action=action, actor_kind="user", actor_id=str(user.pk), object_id=str(object_id)
    ).exists()


def html(response: Any) -> str:
    return response.content.decode()


# --- who may open what -----------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in_from_every_page_and_action(
    adapter: Adapter,
) -> None:
    model_id, adapter_id = adapter.base_model_id, adapter.pk
    client = Client()
    pages = [url("models"), url("adapters"), url("model-import"), url("adapter-import")]
    for kind, pk in (("model", model_id), ("adapter", adapter_id)):
        pages += [url(kind, pk), url(f"{kind}-live", pk), url(f"{kind}-retire", pk)]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/console/sign-in"), page
    before = registry_state()
    for kind, pk in (("model", model_id), ("adapter", adapter_id)):
        response = client.post(url(f"{kind}-import"), {"name": "x", "path": "/tmp"})
        assert response.status_code == 302
        assert response["Location"].startswith("/console/sign-in")
        for action in ("verify", "approve", "retire"):
            response = client.post(url(f"{kind}-{action}", pk))
            assert response.status_code == 302
            assert response["Location"].startswith("/console/sign-in")
    assert registry_state() == before


@pytest.mark.parametrize("role", VIEWERS)
def test_every_role_sees_the_lists_and_the_detail_pages(
    role: str, request: Any, console_as: Any, adapter: Adapter
) -> None:
    client = console_as(request.getfixturevalue(role))
    pages = [(url("models"), "tiny-llama"), (url("adapters"), "triage-lora")]
    for kind, entry in (("model", adapter.base_model), ("adapter", adapter)):
        pages += [(url(kind, entry.pk), entry.name), (url(f"{kind}-live", entry.pk), 'id="live"')]
    for page, name in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert name in html(response), page


@pytest.mark.parametrize("role", WRITERS)
def test_writers_open_the_import_forms(role: str, request: Any, console_as: Any) -> None:
    client = console_as(request.getfixturevalue(role))
    assert client.get(url("model-import")).status_code == 200
    assert client.get(url("adapter-import")).status_code == 200


@pytest.mark.parametrize("role", READ_ONLY)
def test_read_only_roles_get_403_on_import_forms_and_every_action(
    role: str, request: Any, console_as: Any, adapter: Adapter, import_root: Path
) -> None:
    client = console_as(request.getfixturevalue(role))
    directory = write_model_dir(import_root / "other")
    before = registry_state()
    assert client.get(url("model-import")).status_code == 403
    assert client.get(url("adapter-import")).status_code == 403
    response = client.post(url("model-import"), {"name": "other", "path": str(directory)})
    assert response.status_code == 403
    for kind, pk in (("model", adapter.base_model_id), ("adapter", adapter.pk)):
        assert client.get(url(f"{kind}-retire", pk)).status_code == 403
        for action in ("verify", "approve", "retire"):
            assert client.post(url(f"{kind}-{action}", pk)).status_code == 403
    assert registry_state() == before


def test_operator_gets_403_when_approving(
    console_as: Any, operator: User, model: BaseModel
) -> None:
    client = console_as(operator)
    before = registry_state()
    response = client.post(url("model-approve", model.pk))
    assert response.status_code == 403
    assert registry_state() == before


def test_missing_entries_answer_404(console_as: Any, admin: User, model: BaseModel) -> None:
    client = console_as(admin)
    for name in ("model", "model-live", "adapter", "adapter-retire"):
        response = client.get(url(name, 9999))
        assert response.status_code == 404
        assert "There is no such" in html(response)
    assert client.post(url("model-verify", 9999)).status_code == 404


# --- lists -----------------------------------------------------------------------------------


def test_models_list_shows_facts_status_and_short_hash(
    console_as: Any, auditor: User, model: BaseModel
) -> None:
    page = html(console_as(auditor).get(url("models")))
    assert model.artifact is not None
    assert model.artifact.digest[:12] in page
    assert model.artifact.digest not in page.replace(f'title="{model.artifact.digest}"', "")
    assert "LlamaForCausalLM" in page
    assert "llama" in page
    assert "Pending" in page
    assert url("model", model.pk) in page


def test_models_list_filters_by_status_and_name(
    console_as: Any, admin: User, model: BaseModel, import_root: Path, committed: Any
) -> None:
    other = write_model_dir(import_root / "small-llama")
    retired, _ = committed(
        services.model_import, actor=actor(admin), name="small-llama", path=str(other)
    )
    retired.refresh_from_db()
    services.entry_retire(actor=actor(admin), entry=retired)
    client = console_as(admin)

    by_status = html(client.get(url("models"), {"status": "retired"}))
    assert "small-llama" in by_status and "tiny-llama" not in by_status
    by_name = html(client.get(url("models"), {"q": "TINY"}))
    assert "tiny-llama" in by_name and "small-llama" not in by_name
    nothing = html(client.get(url("models"), {"q": "nope"}))
    assert "No models match these filters." in nothing
    everything = html(client.get(url("models"), {"status": "bogus"}))
    assert "tiny-llama" in everything and "small-llama" in everything


def test_models_list_paginates_keeping_the_filters(console_as: Any, admin: User) -> None:
    BaseModel.objects.bulk_create(
        BaseModel(name=f"m-{i:02}", storage="copy", source_path="/x", status="pending")
        for i in range(30)
    )
    client = console_as(admin)
    first = html(client.get(url("models"), {"status": "pending"}))
    assert "m-00" in first and "m-24" in first and "m-25" not in first
    assert "page=2" in first and "status=pending" in first
    second = html(client.get(url("models"), {"status": "pending", "page": "2"}))
    assert "m-25" in second and "m-29" in second and "m-00" not in second


def test_adapters_list_filters_by_base_model_status_and_name(
    console_as: Any, auditor: User, adapter: Adapter
) -> None:
    client = console_as(auditor)
    page = html(client.get(url("adapters")))
    assert "triage-lora" in page and "q_proj, v_proj" in page
    assert "triage-lora" in html(
        client.get(url("adapters"), {"base_model_id": adapter.base_model_id})
    )
    assert "triage-lora" not in html(client.get(url("adapters"), {"status": "approved"}))
    assert "triage-lora" not in html(client.get(url("adapters"), {"q": "other"}))
    assert client.get(url("adapters"), {"base_model_id": "x"}).status_code == 200


# --- detail pages ----------------------------------------------------------------------------


def test_model_page_shows_files_hashes_record_adapters_and_deployments(
    console_as: Any, admin: User, adapter: Adapter
) -> None:
    model = adapter.base_model
    deployment = Deployment.objects.create(name="triage", model=model)
    deployment.adapters.add(adapter)
    page = html(console_as(admin).get(url("model", model.pk)))
    assert model.artifact is not None
    assert model.artifact.digest in page
    for item in model.artifact.files:
        assert item["path"] in page and item["sha256"] in page
    assert "alice" in page and "bob" in page  # imported by, approved by
    assert "triage-lora" in page
    assert "triage" in page and "Deployments using it" in page
    assert "Artifact Import" in page  # the latest job
    adapter_page = html(console_as(admin).get(url("adapter", adapter.pk)))
    assert "Deployments using it" in adapter_page and ">triage<" in adapter_page


def test_app_owner_sees_no_jobs_and_no_deployments(
    console_as: Any, app_owner: User, model: BaseModel
) -> None:
    page = html(console_as(app_owner).get(url("model", model.pk)))
    assert "Latest job" not in page
    assert "Deployments using it" not in page
    assert model.artifact is not None and model.artifact.digest in page


def test_auditor_sees_no_buttons_to_change_anything(
    console_as: Any, auditor: User, model: BaseModel
) -> None:
    client = console_as(auditor)
    page = html(client.get(url("model", model.pk)))
    for hidden in ("Approve tiny-llama", "Verify the files again", "Retire tiny-llama"):
        assert hidden not in page
    assert "Import a model" not in html(client.get(url("models")))


def test_operator_sees_verify_and_retire_but_not_approve(
    console_as: Any, operator: User, model: BaseModel
) -> None:
    page = html(console_as(operator).get(url("model", model.pk)))
    assert "Verify the files again" in page and "Retire tiny-llama" in page
    assert "Approve tiny-llama" not in page


def test_the_importer_is_told_another_admin_must_approve(
    console_as: Any, admin: User, admin2: User, model: BaseModel
) -> None:
    mine = html(console_as(admin).get(url("model", model.pk)))
    assert "another administrator must approve it" in mine
    assert "Approve tiny-llama" not in mine
    assert "Approve tiny-llama" in html(console_as(admin2).get(url("model", model.pk)))


# --- import with progress --------------------------------------------------------------------


@pytest.mark.parametrize("role", WRITERS)
def test_writers_import_a_model_and_its_job_leaves_it_pending(
    role: str, request: Any, console_as: Any, import_root: Path, committed: Any
) -> None:
    user = request.getfixturevalue(role)
    directory = write_model_dir(import_root / "tiny-llama")
    form = {"name": "tiny-llama", "path": str(directory), "storage": "reference"}
    client = console_as(user)
    response = committed(client.post, url("model-import"), form)

    model = BaseModel.objects.get(name="tiny-llama")
    assert response.status_code == 302
    assert response["Location"] == url("model", model.pk)
    assert (model.status, model.storage, model.imported_by) == ("pending", "reference", user)
    assert model.artifact is not None and model.artifact.verified_at is not None
    assert audited("model.import", user, model.pk)
    assert "Importing tiny-llama" in html(client.get(response["Location"]))


def test_detail_page_polls_in_the_background_until_the_import_job_is_done(
    console_as: Any, admin: User, import_root: Path
) -> None:
    client = console_as(admin)
    directory = write_model_dir(import_root / "tiny-llama")
    client.post(url("model-import"), {"name": "tiny-llama", "path": str(directory)})  # queued
    model = BaseModel.objects.get(name="tiny-llama")
    job = Job.objects.get(object_type="model", object_id=str(model.pk))
    live = url("model-live", model.pk)

    page = html(client.get(url("model", model.pk)))
    assert job.status == JobStatus.QUEUED
    assert f'hx-get="{live}" hx-trigger="every 2s"' in page
    assert """hx-headers='{"X-Console-Background": "1"}'""" in page
    assert "Importing" in page

    ingest_artifact(str(job.id))
    fragment = html(client.get(live))
    assert "hx-trigger" not in fragment
    assert "Succeeded" in fragment and "Pending" in fragment
    model.refresh_from_db()
    assert model.artifact is not None and model.artifact.digest in fragment


def test_import_with_bad_fields_shows_errors_at_the_fields_and_changes_nothing(
    console_as: Any, admin: User
) -> None:
    client = console_as(admin)
    before = registry_state()
    response = client.post(
        url("model-import"), {"name": "bad name!", "path": "", "storage": "somewhere"}
    )
    page = html(response)
    assert response.status_code == 422
    assert 'id="err_name"' in page and "Letters, digits" in page
    assert 'id="err_path"' in page and 'id="err_storage"' in page
    assert 'value="bad name!"' in page  # what was typed stays
    assert registry_state() == before


def test_import_outside_the_import_roots_is_a_field_error(
    console_as: Any, admin: User, tmp_path: Path
) -> None:
    outside = write_model_dir(tmp_path / "elsewhere")
    client = console_as(admin)
    before = registry_state()
    response = client.post(url("model-import"), {"name": "x", "path": str(outside)})
    assert response.status_code == 422
    assert "Not inside an import directory" in html(response)
    assert registry_state() == before


def test_import_under_a_taken_name_is_refused_with_409(
    console_as: Any, operator: User, model: BaseModel, import_root: Path
) -> None:
    directory = write_model_dir(import_root / "again")
    client = console_as(operator)
    before = registry_state()
    response = client.post(url("model-import"), {"name": "tiny-llama", "path": str(directory)})
    assert response.status_code == 409
    assert "already taken" in html(response)
    assert registry_state() == before


def test_operator_imports_an_adapter_for_an_approved_model(
    console_as: Any, operator: User, approved: BaseModel, import_root: Path, committed: Any
) -> None:
    client = console_as(operator)
    assert "tiny-llama" in html(client.get(url("adapter-import"), {"base_model": approved.pk}))
    directory = write_adapter_dir(import_root / "triage-lora")
    form = {"name": "triage-lora", "base_model_id": str(approved.pk), "path": str(directory)}
    response = committed(client.post, url("adapter-import"), form)

    adapter = Adapter.objects.get(name="triage-lora")
    assert response.status_code == 302 and response["Location"] == url("adapter", adapter.pk)
    assert (adapter.status, adapter.base_model, adapter.rank) == ("pending", approved, 8)
    assert audited("adapter.import", operator, adapter.pk)


def test_adapter_import_with_no_or_unknown_base_model_is_a_field_error(
    console_as: Any, admin: User, approved: BaseModel, import_root: Path
) -> None:
    client = console_as(admin)
    directory = write_adapter_dir(import_root / "triage-lora")
    before = registry_state()
    for base in ("", "abc", "9999"):
        form = {"name": "triage-lora", "base_model_id": base, "path": str(directory)}
        response = client.post(url("adapter-import"), form)
        assert response.status_code == 422, base
        assert 'id="err_base_model_id"' in html(response)
    assert registry_state() == before


# --- verify, approve, retire -----------------------------------------------------------------


@pytest.mark.parametrize("role", WRITERS)
def test_writers_start_a_verification_that_rehashes_the_files(
    role: str, request: Any, console_as: Any, model: BaseModel, committed: Any
) -> None:
    user = request.getfixturevalue(role)
    client = console_as(user)
    response = committed(client.post, url("model-verify", model.pk))

    assert response.status_code == 302 and response["Location"] == url("model", model.pk)
    job = Job.objects.get(kind=JobKind.ARTIFACT_VERIFY, object_id=str(model.pk))
    assert (job.created_by, job.status) == (user, JobStatus.SUCCEEDED)
    assert audited("model.verify", user, model.pk)
    page = html(client.get(url("model", model.pk)))
    assert "Verification of tiny-llama started." in page
    assert "Last verification: succeeded" in page


def test_verifying_a_retired_model_is_refused_on_its_page(
    console_as: Any, admin: User, model: BaseModel
) -> None:
    services.entry_retire(actor=actor(admin), entry=model)
    client = console_as(admin)
    before = registry_state()
    response = client.post(url("model-verify", model.pk))
    assert response.status_code == 409
    assert "cannot be verified" in html(response)
    assert registry_state() == before


def test_actions_refuse_get(console_as: Any, admin2: User, model: BaseModel) -> None:
    client = console_as(admin2)
    assert client.get(url("model-verify", model.pk)).status_code == 405
    assert client.get(url("model-approve", model.pk)).status_code == 405


def test_a_second_admin_approves_a_pending_model(
    console_as: Any, admin2: User, model: BaseModel
) -> None:
    response = console_as(admin2).post(url("model-approve", model.pk))

    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.status, model.approved_by) == ("approved", admin2)
    assert model.approved_at is not None
    assert audited("model.approve", admin2, model.pk)


def test_the_importer_cannot_approve_their_own_import(
    console_as: Any, admin: User, model: BaseModel
) -> None:
    client = console_as(admin)
    before = registry_state()
    response = client.post(url("model-approve", model.pk))
    assert response.status_code == 403
    assert "other than the one who imported it" in html(response)
    assert registry_state() == before


def test_an_adapter_of_an_unapproved_model_cannot_be_approved(
    console_as: Any, admin: User, admin2: User, adapter: Adapter
) -> None:
    base = adapter.base_model
    BaseModel.objects.filter(pk=base.pk).update(status="pending")  # set-up: back to pending
    client = console_as(admin2)
    before = registry_state()
    response = client.post(url("adapter-approve", adapter.pk))
    assert response.status_code == 409
    assert "must be approved first" in html(response)
    assert registry_state() == before
    BaseModel.objects.filter(pk=base.pk).update(status="approved")
    assert client.post(url("adapter-approve", adapter.pk)).status_code == 302
    adapter.refresh_from_db()
    assert adapter.status == "approved"
    assert audited("adapter.approve", admin2, adapter.pk)


@pytest.mark.parametrize("role", WRITERS)
def test_retire_asks_first_and_changes_nothing_until_confirmed(
    role: str, request: Any, console_as: Any, model: BaseModel
) -> None:
    client = console_as(request.getfixturevalue(role))
    before = registry_state()
    response = client.get(url("model-retire", model.pk))
    page = html(response)
    assert response.status_code == 200
    assert "can never be deployed or approved again" in page
    assert 'method="post"' in page and "Retire tiny-llama" in page
    assert registry_state() == before


@pytest.mark.parametrize("role", WRITERS)
def test_writers_retire_a_model_and_an_adapter_after_confirming(
    role: str, request: Any, console_as: Any, adapter: Adapter
) -> None:
    user = request.getfixturevalue(role)
    client = console_as(user)
    for kind, entry in (("adapter", adapter), ("model", adapter.base_model)):
        response = client.post(url(f"{kind}-retire", entry.pk))
        assert response.status_code == 302 and response["Location"] == url(kind, entry.pk)
        entry.refresh_from_db()
        assert entry.status == "retired" and entry.retired_at is not None
        assert audited(f"{kind}.retire", user, entry.pk)
    page = html(client.get(url("model", adapter.base_model_id)))
    assert "tiny-llama is retired." in page
    assert "Retire tiny-llama" not in page  # nothing left to retire


def test_retiring_twice_is_refused_with_409(console_as: Any, admin: User, model: BaseModel) -> None:
    client = console_as(admin)
    client.post(url("model-retire", model.pk))
    before = registry_state()
    response = client.post(url("model-retire", model.pk))
    assert response.status_code == 409
    assert "cannot be retired" in html(response)
    assert registry_state() == before
