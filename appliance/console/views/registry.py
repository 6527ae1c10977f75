"""Models and adapters: lists with filters, a page per entry (files and hashes, who imported and
approved it, deployments using it, its jobs), import from an import directory with live progress,
verify, approve and retire. Every change goes through the registry services the API calls."""

from __future__ import annotations

from typing import Any

import pydantic
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from appliance.accounts.permissions import Capability, allows
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    paginate,
    query_without_page,
    refused,
    schema_errors,
)
from appliance.core.choices import JobKind, JobStatus
from appliance.core.errors import DomainError
from appliance.core.models import Job
from appliance.fleet.selectors import deployment_list
from appliance.registry import selectors, services
from appliance.registry.choices import RETIRABLE, VERIFIABLE, EntryStatus, Storage
from appliance.registry.models import RegistryEntry
from appliance.registry.schemas import AdapterImportIn, ModelImportIn

MODEL, ADAPTER = "model", "adapter"  # the services' object types, also the URL name stems
DETAIL = {MODEL: "console/pages/models_detail.html", ADAPTER: "console/pages/adapter_detail.html"}
IMPORT = {MODEL: "console/pages/models_import.html", ADAPTER: "console/pages/adapter_import.html"}
LIVE = "console/fragments/registry_live.html"
ACTIVE_JOBS = {JobStatus.QUEUED, JobStatus.RUNNING}
STATUSES = [("", "Any status"), *EntryStatus.choices]
STORAGES = [
    (Storage.COPY.value, "Copy into the appliance's store"),
    (Storage.REFERENCE.value, "Use the files where they are (hash only)"),
]
MODEL_FIELDS = ("name", "path", "storage", "description", "licence", "source")
ADAPTER_FIELDS = ("name", "base_model_id", "path", "storage", "description")
# The API's schema messages, in words for a form.
SCHEMA_MESSAGES = {
    "missing": "Required.",
    "string_too_short": "Required.",
    "string_pattern_mismatch": "Letters, digits and . _ : - only, starting with a letter or digit.",
    "enum": "Choose one of the options.",
    "int_parsing": "Choose one of the options.",
    "int_type": "Choose one of the options.",
}


# --- reads -----------------------------------------------------------------------------------


def _entries(request: ConsoleRequest, kind: str) -> Any:
    if kind == MODEL:
        return selectors.model_list(actor=request.actor)
    return selectors.adapter_list(actor=request.actor)


def _find(request: ConsoleRequest, kind: str, entry_id: int) -> RegistryEntry | None:
    """The entry as the API finds it (through the selector), or None."""
    found: RegistryEntry | None = _entries(request, kind).filter(pk=entry_id).first()
    return found


def _jobs(request: ConsoleRequest, kind: str, entry: RegistryEntry) -> tuple[Job | None, ...]:
    """The entry's latest job (import or verify) and its latest verification, for those the jobs
    API would show them to (no selector for one object's jobs exists yet)."""
    if not allows(request.actor, Capability.JOBS_VIEW):
        return None, None
    jobs = Job.objects.select_related("created_by").filter(
        object_type=kind, object_id=str(entry.pk)
    )
    jobs = jobs.order_by("-created_at")
    return jobs.first(), jobs.filter(kind=JobKind.ARTIFACT_VERIFY).first()


def _live(request: ConsoleRequest, kind: str, entry: RegistryEntry) -> dict[str, Any]:
    """What changes while a job runs: status, the buttons it allows, the job, the files."""
    actor = request.actor
    job, last_verify = _jobs(request, kind, entry)
    polling = entry.status == EntryStatus.IMPORTING or (
        job is not None and job.status in ACTIVE_JOBS
    )
    return {
        "kind": kind,
        "entry": entry,
        "job": job,
        "last_verify": last_verify,
        "show_jobs": allows(actor, Capability.JOBS_VIEW),
        "polling": polling,
        "can_write": allows(actor, Capability.REGISTRY_WRITE),
        "can_approve": allows(actor, Capability.REGISTRY_APPROVE),
        "approvable": entry.status == EntryStatus.PENDING,
        "verifiable": entry.status in VERIFIABLE and entry.artifact_id is not None,
        "retirable": entry.status in RETIRABLE,
        "own_import": entry.imported_by_id is not None and entry.imported_by_id == actor.user_id,
        "urls": {
            name: reverse(f"console:{kind}-{name}", args=[entry.pk])
            for name in ("live", "verify", "approve", "retire")
        },
    }


def _detail(request: ConsoleRequest, kind: str, entry: RegistryEntry) -> dict[str, Any]:
    actor = request.actor
    context = _live(request, kind, entry)
    context["deployments"] = None  # hidden from those who may not see the fleet
    if allows(actor, Capability.FLEET_VIEW):
        deployments = deployment_list(actor=actor)
        context["deployments"] = (
            deployments.filter(model_id=entry.pk)
            if kind == MODEL
            else deployments.filter(adapters__id=entry.pk)
        )
    if kind == MODEL:
        context["adapters"] = selectors.adapter_list(actor=actor, base_model_id=entry.pk)
        context["parameters"] = _count(getattr(entry, "parameter_count", 0))
    return context


def _count(number: int) -> str:
    """A parameter count for people: 1.1B, 350.0M; unknown (0) is a dash."""
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if number >= size:
            return f"{number / size:.1f}{unit}"
    return str(number) if number else "—"


def _filters(request: ConsoleRequest) -> tuple[str, str]:
    """A status the registry knows (anything else means any) and a name fragment."""
    status = request.GET.get("status", "")
    return (status if status in EntryStatus.values else ""), request.GET.get("q", "").strip()[:100]


# --- lists and pages -------------------------------------------------------------------------


@console_view(Capability.REGISTRY_VIEW)
@require_GET
def models_page(request: ConsoleRequest) -> HttpResponse:
    """Every base model, filtered by status and name: what can be deployed and what waits."""
    status, q = _filters(request)
    page = paginate(request, selectors.model_list(actor=request.actor, status=status, q=q))
    return render(
        request,
        "console/pages/models.html",
        {
            "page_obj": page,
            "query": query_without_page(request),
            "status": status,
            "q": q,
            "statuses": STATUSES,
            "sizes": {m.pk: _count(m.parameter_count) for m in page},
            "can_write": allows(request.actor, Capability.REGISTRY_WRITE),
        },
    )


@console_view(Capability.REGISTRY_VIEW)
@require_GET
def adapters_page(request: ConsoleRequest) -> HttpResponse:
    """Every LoRA adapter, filtered by status, name and base model."""
    status, q = _filters(request)
    base = _int(request.GET.get("base_model_id", ""))
    adapters = selectors.adapter_list(actor=request.actor, status=status, q=q, base_model_id=base)
    page = paginate(request, adapters)
    bases = [(m.pk, m.name) for m in selectors.model_list(actor=request.actor)]
    return render(
        request,
        "console/pages/adapters.html",
        {
            "page_obj": page,
            "query": query_without_page(request),
            "status": status,
            "q": q,
            "base_model_id": base or "",
            "statuses": STATUSES,
            "bases": [("", "Any base model"), *bases],
            "can_write": allows(request.actor, Capability.REGISTRY_WRITE),
        },
    )


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


@console_view(Capability.REGISTRY_VIEW)
@require_GET
def entry_page(request: ConsoleRequest, kind: str, entry_id: int) -> HttpResponse:
    """One model or adapter: its facts, files and hashes, approvals, deployments and jobs."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    return render(request, DETAIL[kind], _detail(request, kind, entry))


@console_view(Capability.REGISTRY_VIEW)
@require_GET
def entry_live(request: ConsoleRequest, kind: str, entry_id: int) -> HttpResponse:
    """The part of the entry's page that a running job changes; the page polls it every two
    seconds (as background traffic) until the job is done."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    return render(request, LIVE, _live(request, kind, entry))


# --- import ----------------------------------------------------------------------------------


def _import_context(request: ConsoleRequest, kind: str, form: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {
        "form": form,
        "storages": STORAGES,
        "roots": ", ".join(str(root) for root in settings.APPLIANCE_IMPORT_ROOTS),
    }
    if kind == ADAPTER:
        usable = selectors.model_list(actor=request.actor).filter(
            status__in=[EntryStatus.PENDING, EntryStatus.APPROVED]
        )
        context["bases"] = [("", "Choose a base model"), *((m.pk, m.name) for m in usable)]
    return context


@console_view(Capability.REGISTRY_WRITE)
@require_http_methods(["GET", "POST"])
def entry_import(request: ConsoleRequest, kind: str) -> HttpResponse:
    """Import a base model or adapter from a directory under the import roots, as the API's
    import endpoints do; the entry's page then shows the hashing job's progress."""
    fields = MODEL_FIELDS if kind == MODEL else ADAPTER_FIELDS
    if request.method == "GET":
        form = {"storage": Storage.COPY.value, "base_model_id": request.GET.get("base_model", "")}
        return render(request, IMPORT[kind], _import_context(request, kind, form))
    form = {name: request.POST.get(name, "").strip() for name in fields}
    context = _import_context(request, kind, form)
    schema = ModelImportIn if kind == MODEL else AdapterImportIn
    try:
        # An empty field is a field left out: the schema's default, or "Required."
        payload = schema.model_validate({k: v for k, v in form.items() if v}).dict()
    except pydantic.ValidationError as error:
        errors = schema_errors(error, SCHEMA_MESSAGES, field="name")
        return invalid(request, IMPORT[kind], context, errors)
    entry: RegistryEntry
    try:
        if kind == MODEL:
            entry, _job = services.model_import(actor=request.actor, **payload)
        else:
            base_id = payload.pop("base_model_id")
            base = selectors.model_list(actor=request.actor).filter(pk=base_id).first()
            if base is None:
                errors = FormErrors()
                errors.add("base_model_id", "No such model.")
                return invalid(request, IMPORT[kind], context, errors)
            entry, _job = services.adapter_import(actor=request.actor, base_model=base, **payload)
    except DomainError as error:
        return refused(request, IMPORT[kind], context, error)
    return _done(request, kind, entry, f"Importing {entry.name}: its files are being hashed.")


# --- actions ---------------------------------------------------------------------------------


def _refused_on_page(
    request: ConsoleRequest, kind: str, entry_id: int, error: DomainError
) -> HttpResponse:
    """The entry's page again, fresh from the database, with the service's reason on top."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    return refused(request, DETAIL[kind], _detail(request, kind, entry), error)


def _done(request: ConsoleRequest, kind: str, entry: RegistryEntry, message: str) -> HttpResponse:
    return done(request, message, reverse(f"console:{kind}", args=[entry.pk]))


@console_view(Capability.REGISTRY_WRITE)
@require_POST
def entry_verify(request: ConsoleRequest, kind: str, entry_id: int) -> HttpResponse:
    """Re-hash the files in a job; a mismatch quarantines everything that uses them."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    try:
        services.entry_verify(actor=request.actor, entry=entry)
    except DomainError as error:
        return _refused_on_page(request, kind, entry_id, error)
    return _done(request, kind, entry, f"Verification of {entry.name} started.")


@console_view(Capability.REGISTRY_APPROVE)
@require_POST
def entry_approve(request: ConsoleRequest, kind: str, entry_id: int) -> HttpResponse:
    """Four eyes: a second administrator lets a pending, verified entry be deployed."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    try:
        services.entry_approve(actor=request.actor, entry=entry)
    except DomainError as error:
        return _refused_on_page(request, kind, entry_id, error)
    return _done(request, kind, entry, f"{entry.name} is approved and may be deployed.")


@console_view(Capability.REGISTRY_WRITE)
@require_http_methods(["GET", "POST"])
def entry_retire(request: ConsoleRequest, kind: str, entry_id: int) -> HttpResponse:
    """Retiring is final, so the GET asks and only the POST retires."""
    entry = _find(request, kind, entry_id)
    if entry is None:
        return not_found(request, kind)
    if request.method == "GET":
        return confirm(
            request,
            title=f"Retire {kind} {entry.name}",
            consequence=f"The {kind} {entry.name} will be retired: it stays on record with its "
            "files and hashes, gateways stop offering it at once, and it can never be deployed "
            "or approved again.",
            action=f"Retire {entry.name}",
            cancel_url=reverse(f"console:{kind}", args=[entry.pk]),
        )
    try:
        services.entry_retire(actor=request.actor, entry=entry)
    except DomainError as error:
        return _refused_on_page(request, kind, entry_id, error)
    return _done(request, kind, entry, f"{entry.name} is retired.")


def _entry_paths(prefix: str, kind: str) -> list[Any]:
    extra = {"kind": kind}
    return [
        path(f"{prefix}/import", entry_import, extra, name=f"{kind}-import"),
        path(f"{prefix}/<int:entry_id>", entry_page, extra, name=kind),
        path(f"{prefix}/<int:entry_id>/live", entry_live, extra, name=f"{kind}-live"),
        path(f"{prefix}/<int:entry_id>/verify", entry_verify, extra, name=f"{kind}-verify"),
        path(f"{prefix}/<int:entry_id>/approve", entry_approve, extra, name=f"{kind}-approve"),
        path(f"{prefix}/<int:entry_id>/retire", entry_retire, extra, name=f"{kind}-retire"),
    ]


# Adapters live under models/ so the navigation's "Models" entry stays marked on their pages.
urlpatterns = [
    path("models", models_page, name="models"),
    path("models/adapters", adapters_page, name="adapters"),
    *_entry_paths("models", MODEL),
    *_entry_paths("models/adapters", ADAPTER),
]
