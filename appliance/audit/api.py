"""Audit API: the log (newest first, cursor pagination: it grows without bound), signed
checkpoints, inclusion and consistency proofs, the signing key, verifications and exports."""

from typing import Any
from uuid import UUID

from django.http import FileResponse, HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import CursorPagination, paginate

from appliance.accounts.permissions import Capability, require
from appliance.api.base import MAX_PAGE, actor_of, error_responses, get_or_404
from appliance.audit import exports, proofs, selectors
from appliance.audit.keys import public_pem, signing_key_active
from appliance.audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditExport,
    AuditSigningKey,
    AuditVerification,
)
from appliance.audit.schemas import (
    AuditEventOut,
    AuditFilter,
    CheckpointOut,
    ConsistencyProofOut,
    ExportIn,
    ExportOut,
    InclusionProofOut,
    SigningKeyOut,
    VerificationOut,
)

router = Router(tags=["audit"])
READ_ERRORS = error_responses(401, 403)


@router.get("/events", response={200: list[AuditEventOut], **READ_ERRORS})
@paginate(CursorPagination, ordering=("-seq",), page_size=50, max_page_size=MAX_PAGE)
def list_events(request: HttpRequest, filters: Query[AuditFilter]) -> Any:
    """Filter by time range, actor, action (exact, or a prefix such as ``model.``) and object."""
    return selectors.audit_event_list(actor=actor_of(request), **filters.dict())


@router.get("/events/{seq}", response={200: AuditEventOut, **error_responses(401, 403, 404)})
def get_event(request: HttpRequest, seq: int) -> AuditEvent:
    return get_or_404(selectors.audit_event_list(actor=actor_of(request)), "audit event", seq=seq)


@router.get("/key", response={200: list[SigningKeyOut], **READ_ERRORS})
def signing_keys(request: HttpRequest) -> list[dict[str, Any]]:
    """The signing keys, active first: auditors pin the fingerprint of the active one."""
    require(actor_of(request), Capability.AUDIT_VIEW)
    signing_key_active()  # generated on first use, like the checkpoint job does
    keys = AuditSigningKey.objects.order_by("-created_at")
    return [
        {
            "fingerprint": key.fingerprint,
            "public_key_pem": public_pem(bytes.fromhex(key.public_key)).decode("ascii"),
            "created_at": key.created_at,
            "retired_at": key.retired_at,
        }
        for key in sorted(keys, key=lambda k: k.retired_at is not None)
    ]


@router.get("/checkpoints", response={200: list[CheckpointOut], **READ_ERRORS})
@paginate(CursorPagination, ordering=("-id",), page_size=50, max_page_size=MAX_PAGE)
def list_checkpoints(request: HttpRequest) -> Any:
    require(actor_of(request), Capability.AUDIT_VIEW)
    return AuditCheckpoint.objects.select_related("key")


@router.get("/checkpoints/latest", response={200: CheckpointOut, **error_responses(401, 403, 404)})
def latest_checkpoint(request: HttpRequest) -> AuditCheckpoint:
    require(actor_of(request), Capability.AUDIT_VIEW)
    return get_or_404(AuditCheckpoint.objects.select_related("key").order_by("-id"), "checkpoint")


@router.get(
    "/proofs/inclusion", response={200: InclusionProofOut, **error_responses(401, 403, 422)}
)
def inclusion(request: HttpRequest, seq: int, tree_size: int | None = None) -> Any:
    """The audit path of event ``seq`` in a signed tree (default: the latest checkpoint)."""
    return proofs.audit_inclusion_proof(actor=actor_of(request), seq=seq, tree_size=tree_size)


@router.get(
    "/proofs/consistency", response={200: ConsistencyProofOut, **error_responses(401, 403, 422)}
)
def consistency(request: HttpRequest, first: int, second: int | None = None) -> Any:
    """Proof that the signed tree of ``second`` events (default: latest) extends ``first``."""
    return proofs.audit_consistency_proof(actor=actor_of(request), first=first, second=second)


@router.get("/verifications", response={200: list[VerificationOut], **READ_ERRORS})
@paginate(CursorPagination, ordering=("-id",), page_size=20, max_page_size=MAX_PAGE)
def list_verifications(request: HttpRequest) -> Any:
    """Results of ``audit verify`` (daily, and whenever an admin runs it), newest first."""
    require(actor_of(request), Capability.AUDIT_VIEW)
    return AuditVerification.objects.order_by("-id")


def _export(request: HttpRequest, export_id: UUID) -> AuditExport:
    require(actor_of(request), Capability.AUDIT_EXPORT)
    found: AuditExport = get_or_404(AuditExport.objects.all(), "export", pk=export_id)
    return found


@router.post("/exports", response={202: ExportOut, **error_responses(401, 403, 422)})
def create_export(request: HttpRequest, body: ExportIn) -> Any:
    """Queue a signed export bundle; poll it, then download it when it has succeeded."""
    job = exports.audit_export_request(actor=actor_of(request), filters=body.dict())
    return Status(202, AuditExport.objects.get(pk=job.object_id))


@router.get("/exports", response={200: list[ExportOut], **READ_ERRORS})
@paginate(CursorPagination, ordering=("-created_at",), page_size=20, max_page_size=MAX_PAGE)
def list_exports(request: HttpRequest) -> Any:
    require(actor_of(request), Capability.AUDIT_EXPORT)
    return AuditExport.objects.all()


@router.get("/exports/{export_id}", response={200: ExportOut, **error_responses(401, 403, 404)})
def get_export(request: HttpRequest, export_id: UUID) -> Any:
    return _export(request, export_id)


@router.get(
    "/exports/{export_id}/download",
    response={200: None, **error_responses(401, 403, 404, 409)},
    openapi_extra={"responses": {200: {"content": {"application/zip": {}}}}},
)
def download_export(request: HttpRequest, export_id: UUID) -> FileResponse:
    """The bundle (a .zip); verify it with its verify_export.py and the key's fingerprint."""
    export = _export(request, export_id)
    path = exports.audit_export_download(actor=actor_of(request), export=export)
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=path.name, content_type="application/zip"
    )
