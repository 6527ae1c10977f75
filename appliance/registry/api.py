"""Registry API: base models and LoRA adapters: import, approve, verify, retire."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import File, Form, Query, Router, Status
from ninja.files import UploadedFile
from ninja.pagination import paginate

from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.core.errors import PayloadTooLarge
from appliance.core.models import Job
from appliance.core.schemas import JobOut
from appliance.registry import selectors, services
from appliance.registry.models import Adapter, BaseModel, RegistryEntry
from appliance.registry.schemas import (
    AdapterFilter,
    AdapterImportIn,
    AdapterOut,
    AdapterUploadIn,
    EntryFilter,
    ImportedOut,
    ModelImportIn,
    ModelOut,
)

models_router = Router(tags=["models"])
adapters_router = Router(tags=["adapters"])

WRITE_ERRORS = error_responses(401, 403, 404, 409)


def _imported(entry: RegistryEntry, job: Job) -> Status[Any]:
    return Status(
        202,
        {
            "id": entry.pk,
            "name": entry.name,
            "status": entry.status,
            "job": {"id": str(job.id), "status": job.status},
        },
    )


@models_router.get("", response={200: list[ModelOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_models(request: HttpRequest, filters: Query[EntryFilter]) -> Any:
    return selectors.model_list(actor=actor_of(request), status=filters.status, q=filters.q)


@models_router.post("", response={202: ImportedOut, **error_responses(401, 403, 409, 422)})
def import_model(request: HttpRequest, payload: ModelImportIn) -> Status[Any]:
    """Import a base model from a directory on the appliance (Hugging Face layout, safetensors).
    Hashing runs as a job; the model is ``pending`` approval when it finishes."""
    model, job = services.model_import(actor=actor_of(request), **payload.dict())
    return _imported(model, job)


def _model(request: HttpRequest, model_id: int) -> BaseModel:
    return get_or_404(selectors.model_list(actor=actor_of(request)), "model", pk=model_id)


@models_router.get("/{model_id}", response={200: ModelOut, **error_responses(401, 403, 404)})
def get_model(request: HttpRequest, model_id: int) -> BaseModel:
    return _model(request, model_id)


@models_router.post("/{model_id}/approve", response={200: ModelOut, **WRITE_ERRORS})
def approve_model(request: HttpRequest, model_id: int) -> Any:
    """Approve a pending model; the approver must be an admin other than the importer."""
    return services.entry_approve(actor=actor_of(request), entry=_model(request, model_id))


@models_router.post("/{model_id}/retire", response={200: ModelOut, **WRITE_ERRORS})
def retire_model(request: HttpRequest, model_id: int) -> Any:
    return services.entry_retire(actor=actor_of(request), entry=_model(request, model_id))


@models_router.post("/{model_id}/verify", response={202: JobOut, **WRITE_ERRORS})
def verify_model(request: HttpRequest, model_id: int) -> Status[Any]:
    """Re-hash the files; any mismatch quarantines the model."""
    return Status(
        202, services.entry_verify(actor=actor_of(request), entry=_model(request, model_id))
    )


@adapters_router.get("", response={200: list[AdapterOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_adapters(request: HttpRequest, filters: Query[AdapterFilter]) -> Any:
    return selectors.adapter_list(
        actor=actor_of(request),
        status=filters.status,
        q=filters.q,
        base_model_id=filters.base_model_id,
    )


@adapters_router.post("", response={202: ImportedOut, **error_responses(401, 403, 404, 409, 422)})
def import_adapter(request: HttpRequest, payload: AdapterImportIn) -> Status[Any]:
    """Import a LoRA adapter from a directory on the appliance, checked against its base model."""
    data = payload.dict()
    base = _model(request, data.pop("base_model_id"))
    adapter, job = services.adapter_import(actor=actor_of(request), base_model=base, **data)
    return _imported(adapter, job)


@adapters_router.post(
    "/upload", response={202: ImportedOut, **error_responses(401, 403, 404, 409, 413, 422)}
)
def upload_adapter(
    request: HttpRequest, payload: Form[AdapterUploadIn], archive: File[UploadedFile]
) -> Status[Any]:
    """Import a LoRA adapter from an uploaded .tar.gz or .zip archive."""
    if archive.size and archive.size > settings.APPLIANCE_MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"The archive is over {settings.APPLIANCE_MAX_UPLOAD_BYTES} bytes.",
            code="archive_too_large",
        )
    base = _model(request, payload.base_model_id)
    with _on_disk(archive) as path:
        adapter, job = services.adapter_import_archive(
            actor=actor_of(request),
            name=payload.name,
            base_model=base,
            archive=path,
            filename=archive.name or "archive",
            description=payload.description,
        )
    return _imported(adapter, job)


@contextmanager
def _on_disk(upload: UploadedFile) -> Iterator[Path]:
    """The upload as a file path: Django's temporary file, or a copy of an in-memory upload."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR) as out:
        for chunk in upload.chunks():
            out.write(chunk)
        out.flush()
        yield Path(out.name)


def _adapter(request: HttpRequest, adapter_id: int) -> Adapter:
    return get_or_404(selectors.adapter_list(actor=actor_of(request)), "adapter", pk=adapter_id)


@adapters_router.get("/{adapter_id}", response={200: AdapterOut, **error_responses(401, 403, 404)})
def get_adapter(request: HttpRequest, adapter_id: int) -> Adapter:
    return _adapter(request, adapter_id)


@adapters_router.post("/{adapter_id}/approve", response={200: AdapterOut, **WRITE_ERRORS})
def approve_adapter(request: HttpRequest, adapter_id: int) -> Any:
    """Approve a pending adapter (its base model must be approved; four eyes as for models)."""
    return services.entry_approve(actor=actor_of(request), entry=_adapter(request, adapter_id))


@adapters_router.post("/{adapter_id}/retire", response={200: AdapterOut, **WRITE_ERRORS})
def retire_adapter(request: HttpRequest, adapter_id: int) -> Any:
    return services.entry_retire(actor=actor_of(request), entry=_adapter(request, adapter_id))


@adapters_router.post("/{adapter_id}/verify", response={202: JobOut, **WRITE_ERRORS})
def verify_adapter(request: HttpRequest, adapter_id: int) -> Status[Any]:
    return Status(
        202, services.entry_verify(actor=actor_of(request), entry=_adapter(request, adapter_id))
    )
