"""Nodes and their GPUs: the list, a node's GPUs with their history as charts and the engines it
runs, revoking a node, and the enrollment tokens that let a machine join. The deployments pages
are in ``fleet_deployments``; both are read through the fleet's selectors and changed through
its services, exactly as the management API does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from appliance.accounts.permissions import Capability, allows
from appliance.console import charts
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
from appliance.console.views import fleet_deployments
from appliance.console.views.fleet_forms import checked, optional, text
from appliance.core.errors import DomainError
from appliance.fleet import selectors, services
from appliance.fleet.choices import DesiredState, EngineState, NodeStatus, SampleResolution
from appliance.fleet.models import EngineInstance, Gpu, Node
from appliance.fleet.schemas import EnrollmentTokenIn

GIB = 1024**3
NODE_BADGES: dict[str, str] = {
    NodeStatus.ONLINE: "ok",
    NodeStatus.OFFLINE: "warn",
    NodeStatus.REVOKED: "bad",
}
STATUS_CHOICES = [("", "Any status"), *NodeStatus.choices]


@dataclass(frozen=True)
class Span:
    """A range of the GPU charts and the stored resolution that fits it: raw readings for an
    hour (kept a day), minute averages for a day, hour averages for a week."""

    label: str
    length: timedelta
    resolution: str
    gap: timedelta  # a longer silence between two points is drawn as a gap


def spans() -> dict[str, Span]:
    # Raw readings come every heartbeat; a silence long enough to mark a node offline is a gap.
    silence = timedelta(
        seconds=settings.APPLIANCE_HEARTBEAT_SECONDS * settings.APPLIANCE_NODE_OFFLINE_AFTER_MISSED
    )
    return {
        "hour": Span("Last hour", timedelta(hours=1), SampleResolution.RAW, silence),
        "day": Span("Last day", timedelta(days=1), SampleResolution.MINUTE, timedelta(minutes=3)),
        "week": Span("Last week", timedelta(days=7), SampleResolution.HOUR, timedelta(hours=3)),
    }


# --- nodes ------------------------------------------------------------------------------------


@console_view(Capability.FLEET_VIEW)
def nodes_page(request: ConsoleRequest) -> HttpResponse:
    """Every enrolled node at a glance: is it alive, which agent, how many GPUs and engines."""
    status = request.GET.get("status", "")
    if status not in NodeStatus.values:
        status = ""
    running = Q(instances__desired_state=DesiredState.RUNNING)
    nodes = selectors.node_list(actor=request.actor, status=status or None).annotate(
        engines_running=Count("instances", filter=running, distinct=True),
        engines_ready=Count(
            "instances", filter=running & Q(instances__state=EngineState.READY), distinct=True
        ),
    )
    page_obj = paginate(request, nodes)
    rows = [
        {
            "node": node,
            "badge": NODE_BADGES.get(node.status, "muted"),
            "gpus": sum(1 for gpu in node.gpus.all() if gpu.present),
        }
        for node in page_obj
    ]
    context = {
        "page_obj": page_obj,
        "rows": rows,
        "query": query_without_page(request),
        "status": status,
        "status_choices": STATUS_CHOICES,
        "can_manage": allows(request.actor, Capability.FLEET_MANAGE),
    }
    return render(request, "console/pages/nodes.html", context)


def _node(request: ConsoleRequest, node_id: int) -> Node | None:
    return selectors.node_list(actor=request.actor).filter(pk=node_id).first()


def _node_engines(node: Node) -> QuerySet[EngineInstance]:
    """The engines placed on the node that run or should run (long-stopped ones are history)."""
    return (
        EngineInstance.objects.filter(node=node)
        .exclude(desired_state=DesiredState.STOPPED, state=EngineState.STOPPED)
        .select_related("deployment")
        .order_by("deployment__name", "replica")
    )


def _gpu_charts(request: ConsoleRequest, node: Node, gpu: Gpu, span: Span) -> list[Any]:
    """The GPU's utilization, memory, temperature and power over the span, one chart each."""
    end = timezone.now()
    start = end - span.length
    rows = list(
        selectors.gpu_samples(
            actor=request.actor,
            node=node,
            gpu_id=gpu.pk,
            resolution=span.resolution,
            since=start,
        )
        .order_by("time")
        .values_list("time", "utilization_gpu_pct", "memory_used_bytes", "temperature_c", "power_w")
    )
    total_gib = gpu.memory_total_bytes / GIB if gpu.memory_total_bytes else None
    name = f"GPU {gpu.index}"
    common: dict[str, Any] = {"start": start, "end": end, "max_gap": span.gap}
    return [
        charts.line_chart(
            [(r[0], r[1]) for r in rows],
            title=f"{name} utilization",
            unit="%",
            floor=0,
            ceiling=100,
            **common,
        ),
        charts.line_chart(
            [(r[0], None if r[2] is None else r[2] / GIB) for r in rows],
            title=f"{name} memory used",
            unit="GiB",
            floor=0,
            ceiling=total_gib,
            **common,
        ),
        charts.line_chart(
            [(r[0], r[3]) for r in rows], title=f"{name} temperature", unit="°C", **common
        ),
        charts.line_chart(
            [(r[0], r[4]) for r in rows], title=f"{name} power", unit="W", floor=0, **common
        ),
    ]


def _memory(gpu: Gpu) -> str:
    if not gpu.memory_total_bytes:
        return "—"
    total = charts.number(gpu.memory_total_bytes / GIB)
    if gpu.memory_free_bytes is None:
        return f"{total} GiB"
    return f"{charts.number(gpu.memory_free_bytes / GIB)} GiB free of {total} GiB"


@console_view(Capability.FLEET_VIEW)
def node_page(request: ConsoleRequest, node_id: int) -> HttpResponse:
    """One node: its GPUs now and over the last hour, day or week, and the engines it runs."""
    node = _node(request, node_id)
    if node is None:
        return not_found(request, "node")
    ranges = spans()
    chosen = request.GET.get("range", "hour")
    if chosen not in ranges:
        chosen = "hour"
    span = ranges[chosen]
    gpus = [
        {"gpu": gpu, "memory": _memory(gpu), "charts": _gpu_charts(request, node, gpu, span)}
        for gpu in sorted(node.gpus.all(), key=lambda g: (not g.present, g.index))
    ]
    context = {
        "node": node,
        "badge": NODE_BADGES.get(node.status, "muted"),
        "gpus": gpus,
        "engines": [
            {"engine": engine, "badge": fleet_deployments.ENGINE_BADGES.get(engine.state, "muted")}
            for engine in _node_engines(node)
        ],
        "ranges": [(key, value.label) for key, value in ranges.items()],
        "range": chosen,
        "span": span,
        "can_manage": allows(request.actor, Capability.FLEET_MANAGE),
    }
    return render(request, "console/pages/node_detail.html", context)


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def node_revoke(request: ConsoleRequest, node_id: int) -> HttpResponse:
    """Cut a node off (a stolen or retired machine): confirm on GET, revoke on POST."""
    node = _node(request, node_id)
    if node is None:
        return not_found(request, "node")
    back = reverse("console:node", args=[node.pk])
    if node.status == NodeStatus.REVOKED:
        return done(request, f"Node {node.name} was already revoked.", back)
    if request.method == "GET":
        running = node.instances.filter(desired_state=DesiredState.RUNNING).count()
        return confirm(
            request,
            title=f"Revoke node {node.name}",
            consequence=f"Node {node.name} ({node.hostname or 'no host name'}) will be refused "
            f"from its next call, and its {running} running engine"
            f"{'' if running == 1 else 's'} will be stopped. This cannot be undone: the "
            "machine must be enrolled again with a new token.",
            action=f"Revoke {node.name}",
            cancel_url=back,
        )
    try:
        services.node_revoke(actor=request.actor, node=node)
    except DomainError as error:
        return done(request, error.detail, back)
    message = f"Node {node.name} was revoked; its engines are being stopped."
    return done(request, message, back, status=303)


# --- enrollment tokens ------------------------------------------------------------------------

TOKENS_TEMPLATE = "console/pages/node_tokens.html"


def _tokens_context(request: ConsoleRequest, **extra: Any) -> dict[str, Any]:
    page_obj = paginate(request, selectors.enrollment_token_list(actor=request.actor))
    return {
        "page_obj": page_obj,
        "query": query_without_page(request),
        "default_hours": settings.APPLIANCE_ENROLLMENT_TOKEN_HOURS,
        "errors": FormErrors(),
        "form": {},
        **extra,
    }


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def enrollment_tokens(request: ConsoleRequest) -> HttpResponse:
    """The tokens that let a machine enroll, and a form to make one: its secret is shown once,
    on the answer to the form, and never again."""
    if request.method == "GET":
        return render(request, TOKENS_TEMPLATE, _tokens_context(request))
    form = {
        "name": text(request.POST, "name"),
        "expires_in_hours": optional(request.POST, "expires_in_hours"),
    }
    payload, errors = checked(EnrollmentTokenIn, form)
    if payload is None:
        return invalid(request, TOKENS_TEMPLATE, _tokens_context(request, form=form), errors)
    try:
        token, secret = services.enrollment_token_create(actor=request.actor, **payload.dict())
    except DomainError as error:
        return refused(request, TOKENS_TEMPLATE, _tokens_context(request, form=form), error)
    context = _tokens_context(request, created=token, secret=secret)
    return render(request, TOKENS_TEMPLATE, context, status=201)


@console_view(Capability.FLEET_MANAGE)
@require_http_methods(["GET", "POST"])
def enrollment_token_revoke(request: ConsoleRequest, token_id: int) -> HttpResponse:
    """Withdraw an unused token (given to the wrong person, or not needed): confirm, then do."""
    token = selectors.enrollment_token_list(actor=request.actor).filter(pk=token_id).first()
    if token is None:
        return not_found(request, "enrollment token")
    back = reverse("console:enrollment-tokens")
    if request.method == "GET":
        return confirm(
            request,
            title=f"Revoke enrollment token {token.prefix}",
            consequence=f"The token {token.prefix}… for {token.name!r} will never enroll a "
            "machine. Nodes already enrolled are not affected.",
            action="Revoke the token",
            cancel_url=back,
        )
    try:
        services.enrollment_token_revoke(actor=request.actor, token=token)
    except DomainError as error:
        return refused(request, TOKENS_TEMPLATE, _tokens_context(request), error)
    return done(request, f"Enrollment token {token.prefix} was revoked.", back, status=303)


urlpatterns = [
    path("nodes", nodes_page, name="nodes"),
    path("nodes/<int:node_id>", node_page, name="node"),
    path("nodes/<int:node_id>/revoke", node_revoke, name="node-revoke"),
    path("nodes/enrollment-tokens", enrollment_tokens, name="enrollment-tokens"),
    path(
        "nodes/enrollment-tokens/<int:token_id>/revoke",
        enrollment_token_revoke,
        name="enrollment-token-revoke",
    ),
    *fleet_deployments.urlpatterns,
]
