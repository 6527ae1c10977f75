"""Signed export bundles of the audit log: request one (with the filters the API's export takes),
watch it being built (each unfinished row polls every two seconds, as a background request), and
download the bundle, which is itself recorded in the log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import FileResponse, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods

from appliance.accounts.permissions import Capability
from appliance.audit import exports
from appliance.audit.models import AuditExport
from appliance.console.base import (
    ConsoleRequest,
    console_view,
    done,
    not_found,
    paginate,
    query_without_page,
    refused,
)
from appliance.console.views.report_helpers import (
    AuditQuery,
    actor_kind_choices,
    audit_query,
    outcome_choices,
)
from appliance.core.choices import JobStatus
from appliance.core.errors import DomainError
from appliance.core.models import Job

PAGE = "console/pages/audit_exports.html"
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass
class ExportRow:
    """An export with its job (status, progress, error), as the API's ExportOut shows it."""

    export: AuditExport
    job: Job | None

    @property
    def status(self) -> str:
        return self.job.status if self.job else ""

    @property
    def pending(self) -> bool:
        return self.status in UNFINISHED

    @property
    def percent(self) -> int:
        return round(100 * self.job.progress) if self.job else 0

    @property
    def downloadable(self) -> bool:
        return self.status == JobStatus.SUCCEEDED and exports.export_path(self.export) is not None


def _rows(items: list[AuditExport]) -> list[ExportRow]:
    """The exports' jobs in one query (the API looks each up; a page here needs them all)."""
    jobs = Job.objects.filter(
        object_type="audit_export", object_id__in=[str(e.pk) for e in items]
    ).order_by("created_at")
    by_export = {job.object_id: job for job in jobs}
    return [ExportRow(export, by_export.get(str(export.pk))) for export in items]


def _context(request: ConsoleRequest, query: AuditQuery) -> dict[str, Any]:
    page_obj = paginate(request, AuditExport.objects.order_by("-created_at"))
    return {
        "page_obj": page_obj,
        "rows": _rows(list(page_obj.object_list)),
        "query": query_without_page(request),
        "typed": query.typed,
        "errors": query.errors,
        "actor_kinds": actor_kind_choices(),
        "outcomes": outcome_choices(),
    }


@console_view(Capability.AUDIT_EXPORT)
@require_http_methods(["GET", "POST"])
def export_list(request: ConsoleRequest) -> HttpResponse:
    """The exports, newest first, and the form that asks for one (prefilled from the browser's
    filters when it links here)."""
    if request.method == "GET":
        query = audit_query(request.GET)
        return render(request, PAGE, _context(request, query))
    query = audit_query(request.POST)
    if query.errors:
        return render(request, PAGE, _context(request, query), status=422)
    try:
        job = exports.audit_export_request(actor=request.actor, filters=query.filters)
    except DomainError as error:
        return refused(request, PAGE, _context(request, query), error)
    message = f"Export {job.object_id} requested; it is built in the background."
    return done(request, message, reverse("console:audit-exports"), status=303)


def _export(export_id: Any) -> AuditExport | None:
    return AuditExport.objects.filter(pk=export_id).first()


@console_view(Capability.AUDIT_EXPORT)
@require_GET
def export_row(request: ConsoleRequest, export_id: Any) -> HttpResponse:
    """One row, for the poll that shows an unfinished export's progress."""
    export = _export(export_id)
    if export is None:
        return not_found(request, "export")
    [row] = _rows([export])
    return render(request, "console/fragments/audit_export_row.html", {"row": row})


@console_view(Capability.AUDIT_EXPORT)  # type: ignore[arg-type]  # View names HttpResponse
@require_GET
def export_download(request: ConsoleRequest, export_id: Any) -> HttpResponseBase:
    """Stream the bundle as the API does; an unfinished or removed one is a 409 on the list."""
    export = _export(export_id)
    if export is None:
        return not_found(request, "export")
    try:
        bundle = exports.audit_export_download(actor=request.actor, export=export)
    except DomainError as error:
        return refused(request, PAGE, _context(request, audit_query({})), error)
    return FileResponse(
        bundle.open("rb"), as_attachment=True, filename=bundle.name, content_type="application/zip"
    )


urlpatterns = [
    path("audit/exports", export_list, name="audit-exports"),
    path("audit/exports/<uuid:export_id>/row", export_row, name="audit-export-row"),
    path("audit/exports/<uuid:export_id>/download", export_download, name="audit-export-download"),
]
