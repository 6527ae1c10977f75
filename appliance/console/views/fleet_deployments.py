"""Deployments: what was asked for (desired) beside what the nodes' agents report (observed),
creating one, changing its adapters at runtime, and removing it. A deployment's page refreshes
its engines every three seconds, so an operator can watch them download, start and turn ready.

Reads go through ``appliance.fleet.selectors`` and the registry's selectors, writes through
``appliance.fleet.deployments``: the same calls, checks and audit events as the API's."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

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
)
from appliance.console.views.fleet_forms import checked, ids, number_list, optional, text
from appliance.core.actors import Actor
from appliance.core.errors import DomainError, ValidationFailed
from appliance.fleet import deployments as deployment_services
from appliance.fleet import selectors
from appliance.fleet.choices import (
    DTYPES,
    LORA_RANKS,
    QUANTIZATIONS,
    TENSOR_PARALLEL_SIZES,
    DeploymentStatus,
    DesiredState,
    Device,
    EngineState,
    NodeStatus,
)
from appliance.fleet.models import Deployment, EngineInstance
from appliance.fleet.schemas import DeploymentIn
from appliance.registry import selectors as registry_selectors
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter

ENGINE_BADGES: dict[str, str] = {
    EngineState.READY: "ok",
    EngineState.PENDING: "warn",
    EngineState.DOWNLOADING: "warn",
    EngineState.STARTING: "warn",
    EngineState.UNHEALTHY: "bad",
    EngineState.FAILED: "bad",
    EngineState.REFUSED: "bad",
    EngineState.STOPPED: "muted",
}
STATUS_CHOICES = [("active", "Active"), ("removed", "Removed"), ("all", "All")]
ERROR_TAIL_LINES = 30
NEW_TEMPLATE = "console/pages/deployment_new.html"
ADAPTERS_TEMPLATE = "console/pages/deployment_adapters.html"


# --- reading ----------------------------------------------------------------------------------


def _deployment(request: ConsoleRequest, deployment_id: int) -> Deployment | None:
    return selectors.deployment_list(actor=request.actor).filter(pk=deployment_id).first()


def _back(deployment: Deployment) -> str:
    """The deployment's page, where its changes start and return."""
    return reverse("console:deployment", args=[deployment.pk])


def _first_line(error: str) -> str:
    return next((line.strip() for line in error.splitlines() if line.strip()), "")


def _engine(engine: EngineInstance) -> dict[str, Any]:
    """One engine as observed, with its figures made readable (means from sums and counts)."""
    metrics = engine.metrics or {}

    def mean_ms(name: str) -> float | None:
        total, count = metrics.get(f"{name}_seconds_sum"), metrics.get(f"{name}_seconds_count")
        return 1000 * total / count if total is not None and count else None

    kv = metrics.get("kv_cache_usage")
    lines = engine.last_error.splitlines()
    return {
        "engine": engine,
        "badge": ENGINE_BADGES.get(engine.state, "muted"),
        "running": metrics.get("requests_running"),
        "waiting": metrics.get("requests_waiting"),
        "kv_pct": None if kv is None else 100 * kv,
        "ttft_ms": mean_ms("ttft"),
        "latency_ms": mean_ms("e2e_latency"),
        "generated": metrics.get("generation_tokens_total"),
        "error_line": _first_line(engine.last_error),
        "error_tail": "\n".join(lines[-ERROR_TAIL_LINES:]),
        "error_cut": len(lines) > ERROR_TAIL_LINES,
    }


def _observed(deployment: Deployment) -> dict[str, Any]:
    """The deployment's desired settings beside its engines' reported states."""
    engines = [_engine(e) for e in deployment.instances.all()]
    wanted = [e for e in engines if e["engine"].desired_state == DesiredState.RUNNING]
    states = Counter(e["engine"].state for e in wanted)
    desired_adapters = sorted(a.name for a in deployment.adapters.all())
    ready = [e["engine"] for e in wanted if e["engine"].state == EngineState.READY]
    return {
        "deployment": deployment,
        "engines": engines,
        "ready": states.get(EngineState.READY, 0),
        "wanted": len(wanted),
        "states": [
            {"state": state, "count": count, "badge": ENGINE_BADGES.get(state, "muted")}
            for state, count in sorted(states.items())
        ],
        "adapters": desired_adapters,
        # Asked for but missing from a ready engine: the agent has not loaded it (yet).
        "not_loaded": [
            name for name in desired_adapters if any(name not in e.loaded_adapters for e in ready)
        ],
        "last_error": next((e["error_line"] for e in engines if e["error_line"]), ""),
    }


@console_view(Capability.FLEET_VIEW)
def deployments_page(request: ConsoleRequest) -> HttpResponse:
    """Every deployment with its desired replicas beside its engines' observed states."""
    status = request.GET.get("status", "active")
    if status not in dict(STATUS_CHOICES):
        status = "active"
    deployments = selectors.deployment_list(
        actor=request.actor, status=None if status == "all" else status
    )
    page_obj = paginate(request, deployments)
    context = {
        "page_obj": page_obj,
        "rows": [_observed(d) for d in page_obj],
        "query": query_without_page(request),
        "status": status,
        "status_choices": STATUS_CHOICES,
        "can_manage": allows(request.actor, Capability.FLEET_MANAGE),
    }
    return render(request, "console/pages/deployments.html", context)


@console_view(Capability.FLEET_VIEW)
def deployment_page(request: ConsoleRequest, deployment_id: int) -> HttpResponse:
    """One deployment: its settings, and its engines refreshed while an operator watches."""
    deployment = _deployment(request, deployment_id)
    if deployment is None:
        return not_found(request, "deployment")
    context = {
        **_observed(deployment),
        "active": deployment.status == DeploymentStatus.ACTIVE,
        "can_manage": allows(request.actor, Capability.FLEET_MANAGE),
    }
    return render(request, "console/pages/deployment_detail.html", context)


@console_view(Capability.FLEET_VIEW)
def deployment_engines(request: ConsoleRequest, deployment_id: int) -> HttpResponse:
    """The engines part of a deployment's page, for its background refresh."""
    deployment = _deployment(request, deployment_id)
    if deployment is None:
        return not_found(request, "deployment")
    return render(request, "console/fragments/fleet_engines.html", _observed(deployment))


# --- creating ---------------------------------------------------------------------------------


def _adapters_by_id(actor: Actor, adapter_ids: list[int]) -> list[Adapter]:
    """The adapters chosen, as the API finds them; an unknown id is a field error."""
    found = list(registry_selectors.adapter_list(actor=actor).filter(pk__in=adapter_ids))
    missing = sorted(set(adapter_ids) - {a.pk for a in found})
    if missing:
        raise ValidationFailed(
            "Unknown adapters.", fields={"adapter_ids": [f"No adapter {i}." for i in missing]}
        )
    return found


def _choices(items: Any) -> list[tuple[str, str]]:
    return [(str(item), str(item)) for item in items]


def _new_context(request: ConsoleRequest, form: dict[str, Any]) -> dict[str, Any]:
    actor = request.actor
    models = registry_selectors.model_list(actor=actor, status=EntryStatus.APPROVED)
    adapters = registry_selectors.adapter_list(actor=actor, status=EntryStatus.APPROVED)
    nodes = selectors.node_list(actor=actor, status=NodeStatus.ONLINE)
    return {
        "form": form,
        "chosen_adapters": {str(i) for i in form.get("adapter_ids") or []},
        "errors": FormErrors(),
        "models": [("", "Choose a model"), *((m.pk, m.name) for m in models)],
        "adapters": adapters,
        "nodes": [("", "Any online node with room"), *((n.pk, n.name) for n in nodes)],
        "devices": [(d, d.upper()) for d in Device.values],
        "dtypes": _choices(DTYPES),
        "quantizations": [(q, q or "None") for q in QUANTIZATIONS],
        "tensor_parallel_sizes": _choices(TENSOR_PARALLEL_SIZES),
        "lora_ranks": _choices(LORA_RANKS),
    }


DEFAULTS = {
    "device": Device.GPU,
    "replicas": "1",
    "gpu_memory_utilization": "0.9",
    "tensor_parallel_size": "1",
    "dtype": "auto",
    "quantization": "",
    "max_loras": "4",
    "max_lora_rank": "16",
}


def _read_deployment_form(request: ConsoleRequest) -> tuple[dict[str, Any], FormErrors]:
    """The form as the API's request body, with what could not even be read as errors."""
    post, errors = request.POST, FormErrors()
    form: dict[str, Any] = {
        "name": text(post, "name"),
        "adapter_ids": ids(post, "adapter_ids", errors),
        "device": text(post, "device"),
        "node_id": optional(post, "node_id"),
        "gpu_indices": number_list(post, "gpu_indices", errors),
        "description": text(post, "description"),
    }
    for name in ("replicas", "gpu_memory_utilization", "tensor_parallel_size", "max_loras"):
        form[name] = text(post, name)
    for name in ("max_model_len", "dtype", "quantization", "max_lora_rank"):
        form[name] = optional(post, name)
    form["quantization"] = form["quantization"] or ""
    form["dtype"] = form["dtype"] or "auto"
    if model_id := optional(post, "model_id"):  # none chosen: the schema says it is required
        form["model_id"] = model_id
    return form, errors


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def deployment_new(request: ConsoleRequest) -> HttpResponse:
    """Serve an approved model: every replica is placed at once, or nothing is written and the
    form says why (no room, a name taken, an adapter of another model)."""
    if request.method == "GET":
        return render(request, NEW_TEMPLATE, _new_context(request, dict(DEFAULTS)))
    form, errors = _read_deployment_form(request)
    shown = {**form, "gpu_indices": request.POST.get("gpu_indices", "")}
    payload, errors = checked(DeploymentIn, form, errors)
    if payload is None:
        return invalid(request, NEW_TEMPLATE, _new_context(request, shown), errors)
    actor = request.actor
    data = payload.dict()
    try:
        model = registry_selectors.model_list(actor=actor).filter(pk=data.pop("model_id")).first()
        if model is None:
            raise ValidationFailed("Unknown model.", fields={"model_id": ["No such model."]})
        adapters = _adapters_by_id(actor, data.pop("adapter_ids"))
        node_id = data.pop("node_id")
        node = selectors.node_list(actor=actor).filter(pk=node_id).first() if node_id else None
        if node_id and node is None:
            raise ValidationFailed("Unknown node.", fields={"node_id": ["No such node."]})
        deployment = deployment_services.deployment_create(
            actor=actor, model=model, adapters=adapters, node=node, **data
        )
    except DomainError as error:
        return refused(request, NEW_TEMPLATE, _new_context(request, shown), error)
    message = f"Deployment {deployment.name} was created; its engines are being placed."
    return done(request, message, _back(deployment), status=303)


# --- changing ---------------------------------------------------------------------------------


def _adapters_context(
    request: ConsoleRequest, deployment: Deployment, chosen: set[str]
) -> dict[str, Any]:
    """The model's approved adapters, and those it serves now whatever their state (a
    quarantined one shows, so that unchoosing it is a visible decision)."""
    current = list(deployment.adapters.all())
    approved = registry_selectors.adapter_list(
        actor=request.actor, status=EntryStatus.APPROVED, base_model_id=deployment.model_id
    )
    choices = {a.pk: a for a in [*approved, *current]}
    return {
        "deployment": deployment,
        "choices": sorted(choices.values(), key=lambda a: a.name),
        "chosen": chosen,
        "errors": FormErrors(),
        "active": deployment.status == DeploymentStatus.ACTIVE,
    }


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def deployment_adapters(request: ConsoleRequest, deployment_id: int) -> HttpResponse:
    """Load or unload adapters: the deployment's adapter set changes, and its engines load and
    unload them without a restart."""
    deployment = _deployment(request, deployment_id)
    if deployment is None:
        return not_found(request, "deployment")
    if request.method == "GET":
        chosen = {str(a.pk) for a in deployment.adapters.all()}
        return render(request, ADAPTERS_TEMPLATE, _adapters_context(request, deployment, chosen))
    errors = FormErrors()
    adapter_ids = ids(request.POST, "adapter_ids", errors)
    context = _adapters_context(request, deployment, {str(i) for i in adapter_ids})
    if errors:
        return invalid(request, ADAPTERS_TEMPLATE, context, errors)
    try:
        deployment_services.deployment_set_adapters(
            actor=request.actor,
            deployment=deployment,
            adapters=_adapters_by_id(request.actor, adapter_ids),
        )
    except DomainError as error:
        return refused(request, ADAPTERS_TEMPLATE, context, error)
    message = f"Adapters of {deployment.name} saved; its engines load and unload them now."
    return done(request, message, _back(deployment), status=303)


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def deployment_remove(request: ConsoleRequest, deployment_id: int) -> HttpResponse:
    """Stop serving a deployment: confirm on GET, remove on POST (kept on record)."""
    deployment = _deployment(request, deployment_id)
    if deployment is None:
        return not_found(request, "deployment")
    back = _back(deployment)
    if deployment.status == DeploymentStatus.REMOVED:
        return done(request, f"Deployment {deployment.name} was already removed.", back)
    if request.method == "GET":
        running = sum(
            1 for e in deployment.instances.all() if e.desired_state == DesiredState.RUNNING
        )
        return confirm(
            request,
            title=f"Remove deployment {deployment.name}",
            consequence=f"{deployment.name} ({deployment.model.name}) will stop being served: "
            f"its {running} engine{'' if running == 1 else 's'} will be stopped and requests "
            "for it will fail. It stays on record as removed.",
            action=f"Remove {deployment.name}",
            cancel_url=back,
        )
    deployment_services.deployment_remove(actor=request.actor, deployment=deployment)
    message = f"Deployment {deployment.name} was removed; its engines are being stopped."
    return done(request, message, back, status=303)


urlpatterns = [
    path("deployments", deployments_page, name="deployments"),
    path("deployments/new", deployment_new, name="deployment-new"),
    path("deployments/<int:deployment_id>", deployment_page, name="deployment"),
    path("deployments/<int:deployment_id>/engines", deployment_engines, name="deployment-engines"),
    path(
        "deployments/<int:deployment_id>/adapters", deployment_adapters, name="deployment-adapters"
    ),
    path("deployments/<int:deployment_id>/remove", deployment_remove, name="deployment-remove"),
]
