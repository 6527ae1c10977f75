"""Routes and evaluations: the virtual models applications call, what each sends where (rules,
task classes, fallback tiers, cost ceiling), the task classes, and evaluations on the customer's
own data with their reports; pointing a route at an evaluation's winner. Reads go through the
routing selectors and changes through the routing services, as the API's do. The items of an
evaluation set are sealed and never shown."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count, Q
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
from appliance.core.errors import Conflict, DomainError
from appliance.routing import evaluations, selectors, services
from appliance.routing.choices import EvaluationStatus, RouteStatus
from appliance.routing.models import Evaluation, Route, RouteTier

ROUTES = "console/pages/routes.html"
ROUTE = "console/pages/route.html"
CLASSES = "console/pages/route_task_classes.html"
EVALUATIONS = "console/pages/evaluations.html"
EVALUATION = "console/pages/evaluation.html"
PROGRESS = "console/pages/evaluation_progress.html"
REPORT = "console/pages/evaluation_report.html"
APPLY = "console/pages/evaluation_apply.html"
RUNNING = (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING)


def _int(value: str | None) -> int | None:
    """A form's id, or None for anything that is not a positive number."""
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


# Routes ----------------------------------------------------------------------------------------


@console_view(Capability.ROUTES_VIEW)
def routes_page(request: ConsoleRequest) -> HttpResponse:
    """Every route with its size and shape, to find the one an application calls."""
    q = request.GET.get("q", "").strip()[:63]
    status = request.GET.get("status", "")
    routes = selectors.route_list(actor=request.actor).annotate(
        tier_count=Count("tiers", distinct=True),
        rule_count=Count("rules", distinct=True),
        class_count=Count("tiers__task_class", distinct=True),
    )
    if q:
        routes = routes.filter(name__icontains=q)
    if status in RouteStatus.values:
        routes = routes.filter(status=status)
    page_obj = paginate(request, routes)
    context = {
        "page_obj": page_obj,
        "query": query_without_page(request),
        "q": q,
        "status": status,
        "status_choices": [("", "Any state"), *RouteStatus.choices],
        "currency": settings.APPLIANCE_CURRENCY,
        "may_see_evaluations": allows(request.actor, Capability.EVALUATIONS_VIEW),
    }
    return render(request, ROUTES, context)


def _route(request: ConsoleRequest, route_id: int) -> Route | None:
    return selectors.route_list(actor=request.actor).filter(pk=route_id).first()


def _chains(route: Route) -> list[dict[str, Any]]:
    """Each task class of the route with its tiers in the order they are tried."""
    tiers = route.tiers.select_related("task_class", "model", "adapter", "fallback_route")
    chains: dict[str, dict[str, Any]] = {}
    for tier in tiers.order_by("task_class__name", "position"):
        name = tier.task_class.name
        chain = chains.setdefault(name, {"task_class": name, "tiers": []})
        chain["tiers"].append(tier)
    default = route.default_class.name
    chains.setdefault(default, {"task_class": default, "tiers": []})
    return sorted(chains.values(), key=lambda c: (c["task_class"] != default, c["task_class"]))


def _route_context(request: ConsoleRequest, route: Route) -> dict[str, Any]:
    return {
        "route": route,
        "chains": _chains(route),
        "rules": route.rules.select_related("task_class").order_by("position"),
        "currency": settings.APPLIANCE_CURRENCY,
        "may_manage": allows(request.actor, Capability.ROUTES_MANAGE),
    }


@console_view(Capability.ROUTES_VIEW)
def route_detail(request: ConsoleRequest, route_id: int) -> HttpResponse:
    """What a route does with a request: its rules in order, then each task class's chain of
    targets with their timeouts, under the route's cost ceiling."""
    route = _route(request, route_id)
    if route is None:
        return not_found(request, "route")
    return render(request, ROUTE, _route_context(request, route))


@console_view(Capability.ROUTES_MANAGE)
@require_http_methods(["GET", "POST"])
def route_delete(request: ConsoleRequest, route_id: int) -> HttpResponse:
    """Remove a route no application is granted and no route falls back to (the service
    refuses otherwise, naming them)."""
    route = _route(request, route_id)
    if route is None:
        return not_found(request, "route")
    if request.method == "GET":
        rules, tiers = route.rules.count(), route.tiers.count()
        consequence = (
            f"Route {route.name} (version {route.version}) will be deleted with its {rules} "
            f"rule{'s' if rules != 1 else ''} and {tiers} tier{'s' if tiers != 1 else ''}. "
            "Gateways stop serving it from their next request. The task classes and models it "
            "names are kept."
        )
        return confirm(
            request,
            title=f"Delete route {route.name}",
            consequence=consequence,
            action=f"Delete route {route.name}",
            cancel_url=reverse("console:route", args=[route.pk]),
        )
    try:
        services.route_delete(actor=request.actor, route=route)
    except DomainError as error:
        return refused(request, ROUTE, _route_context(request, route), error)
    return done(request, f"Route {route.name} was deleted.", reverse("console:routes"))


@console_view(Capability.ROUTES_VIEW)
def task_classes_page(request: ConsoleRequest) -> HttpResponse:
    """The kinds of request routes tell apart, and how many example prompts teach each."""
    q = request.GET.get("q", "").strip()[:40]
    classes = selectors.task_class_list(actor=request.actor)
    if q:
        classes = classes.filter(Q(name__icontains=q) | Q(description__icontains=q))
    page_obj = paginate(request, classes)
    context = {"page_obj": page_obj, "query": query_without_page(request), "q": q}
    return render(request, CLASSES, context)


# Evaluations -----------------------------------------------------------------------------------


@console_view(Capability.EVALUATIONS_VIEW)
def evaluations_page(request: ConsoleRequest) -> HttpResponse:
    """Evaluation runs, newest first, with their scores; running ones update by themselves."""
    status = request.GET.get("status", "")
    runs = selectors.evaluation_list(actor=request.actor)
    if status in EvaluationStatus.values:
        runs = runs.filter(status=status)
    page_obj = paginate(request, runs)
    context = {
        "page_obj": page_obj,
        "query": query_without_page(request),
        "status": status,
        "status_choices": [("", "Any state"), *EvaluationStatus.choices],
        "running_states": RUNNING,
    }
    return render(request, EVALUATIONS, context)


def _evaluation(request: ConsoleRequest, evaluation_id: int) -> Evaluation | None:
    return selectors.evaluation_list(actor=request.actor).filter(pk=evaluation_id).first()


def _signed(value: float | None, places: int = 2) -> str:
    return "—" if value is None else f"{value:+.{places}f}"


def _comparison(evaluation: Evaluation) -> tuple[str | None, list[dict[str, Any]]]:
    """The report's rows, each set against the target score and the baseline: the first
    candidate named when the evaluation was started."""
    report = evaluation.report or {}
    rows = [row for row in report.get("candidates") or [] if isinstance(row, dict)]
    baseline_name = evaluation.candidates[0] if evaluation.candidates else None
    baseline = next((row for row in rows if row.get("name") == baseline_name), None)
    out = []
    for row in rows:
        score = float(row.get("score") or 0.0)
        vs_baseline = vs_cost = "—"
        if row is baseline:
            vs_baseline = "baseline"
        elif baseline is not None:
            vs_baseline = _signed(score - float(baseline.get("score") or 0.0))
            cost, base_cost = row.get("cost"), baseline.get("cost")
            if cost is not None and base_cost is not None:
                vs_cost = _signed(cost - base_cost, 6)
        out.append(
            {
                **row,
                "score": score,
                "vs_target": _signed(score - evaluation.target_score),
                "vs_baseline": vs_baseline,
                "cost_vs_baseline": vs_cost,
                "winner": row.get("name") == report.get("smallest_meeting"),
            }
        )
    return (baseline_name if baseline is not None else None), out


def _evaluation_context(request: ConsoleRequest, evaluation: Evaluation) -> dict[str, Any]:
    baseline, rows = _comparison(evaluation)
    winner = (evaluation.report or {}).get("smallest_meeting")
    may_apply = (
        evaluation.status == EvaluationStatus.SUCCEEDED
        and bool(winner)
        and allows(request.actor, Capability.EVALUATIONS_RUN)
        and allows(request.actor, Capability.ROUTES_MANAGE)
    )
    context: dict[str, Any] = {
        "evaluation": evaluation,
        "rows": rows,
        "baseline": baseline,
        "winner": winner,
        "currency": (evaluation.report or {}).get("currency") or settings.APPLIANCE_CURRENCY,
        "running": evaluation.status in RUNNING,
        "may_apply": may_apply,
        "progress_pct": round(evaluation.progress * 100),
    }
    if may_apply:
        context["route_choices"] = [
            (r.pk, r.name) for r in selectors.route_list(actor=request.actor)
        ]
        context["class_choices"] = [
            (c.name, c.name) for c in selectors.task_class_list(actor=request.actor)
        ]
    return context


@console_view(Capability.EVALUATIONS_VIEW)
def evaluation_detail(request: ConsoleRequest, evaluation_id: int) -> HttpResponse:
    """One run: its progress while it runs, then each candidate's score, errors, latency,
    tokens and cost against the target and the baseline, and the smallest that met it."""
    evaluation = _evaluation(request, evaluation_id)
    if evaluation is None:
        return not_found(request, "evaluation")
    return render(request, EVALUATION, _evaluation_context(request, evaluation))


@console_view(Capability.EVALUATIONS_VIEW)
def evaluation_report(request: ConsoleRequest, evaluation_id: int) -> HttpResponse:
    """The detail page's report section, polled while the run is queued or running."""
    evaluation = _evaluation(request, evaluation_id)
    if evaluation is None:
        return not_found(request, "evaluation")
    return render(request, REPORT, _evaluation_context(request, evaluation))


@console_view(Capability.EVALUATIONS_VIEW)
def evaluation_progress(request: ConsoleRequest, evaluation_id: int) -> HttpResponse:
    """A list row's state and progress, polled while the run is queued or running."""
    evaluation = _evaluation(request, evaluation_id)
    if evaluation is None:
        return not_found(request, "evaluation")
    return render(request, PROGRESS, {"evaluation": evaluation, "running_states": RUNNING})


def _tier_key(tier: RouteTier) -> tuple[str, str]:
    if tier.fallback_route is not None:
        return ("route", tier.fallback_route.name)
    if tier.adapter is not None:
        return ("adapter", tier.adapter.name)
    return ("model", tier.model.name if tier.model else "")


def _apply_preview(route: Route, task_class: str, winner: evaluations.Candidate) -> dict[str, Any]:
    """The class's chain now and after the winner is put first (the service's own order)."""
    tiers = route.tiers.filter(task_class__name=task_class).select_related(
        "model", "adapter", "fallback_route"
    )
    now = [_tier_key(t) for t in tiers.order_by("position")]
    first = (winner.kind, winner.name)
    return {"before": now, "after": [first, *[key for key in now if key != first]]}


@console_view(Capability.EVALUATIONS_RUN)
@require_http_methods(["GET", "POST"])
def evaluation_apply(request: ConsoleRequest, evaluation_id: int) -> HttpResponse:
    """Make the evaluation's winner the first tier of a route's task class (its other tiers stay
    behind it as fallbacks): a confirmation naming the change, then the change."""
    evaluation = _evaluation(request, evaluation_id)
    if evaluation is None:
        return not_found(request, "evaluation")
    data = request.POST if request.method == "POST" else request.GET
    context = {
        **_evaluation_context(request, evaluation),
        "route_value": data.get("route", ""),
        "class_value": data.get("task_class", ""),
    }
    errors = FormErrors()
    route_id = _int(data.get("route"))
    route = _route(request, route_id) if route_id else None
    if route is None:
        errors.add("route", "Choose a route from the list.")
    name = data.get("task_class", "")
    task_class = selectors.task_class_list(actor=request.actor).filter(name=name).first()
    if task_class is None:
        errors.add("task_class", "Choose a task class from the list.")
    if errors or route is None or task_class is None:
        return invalid(request, EVALUATION, context, errors)
    if request.method == "POST":
        try:
            evaluations.evaluation_apply(
                actor=request.actor, evaluation=evaluation, route=route, task_class=task_class
            )
        except DomainError as error:
            return refused(request, EVALUATION, context, error)
        return done(
            request,
            f"{context['winner']} is now the first tier of {task_class.name} on route "
            f"{route.name}.",
            reverse("console:route", args=[route.pk]),
        )
    winner = evaluations.candidate_of(context["winner"] or "")
    if evaluation.status != EvaluationStatus.SUCCEEDED or winner is None:
        # Shown before the confirmation rather than after it; the service refuses these too.
        nothing = Conflict(
            "This evaluation has no candidate that reached its target score and is still "
            "approved or active, so there is nothing to apply.",
            code="no_winner",
        )
        return refused(request, EVALUATION, context, nothing)
    preview = _apply_preview(route, task_class.name, winner)
    return render(
        request,
        APPLY,
        {**context, **preview, "route": route, "task_class": task_class, "candidate": winner},
    )


urlpatterns = [
    path("routes", routes_page, name="routes"),
    path("routes/<int:route_id>", route_detail, name="route"),
    path("routes/<int:route_id>/delete", route_delete, name="route-delete"),
    path("routes/task-classes", task_classes_page, name="task-classes"),
    path("routes/evaluations", evaluations_page, name="evaluations"),
    path("routes/evaluations/<int:evaluation_id>", evaluation_detail, name="evaluation"),
    path(
        "routes/evaluations/<int:evaluation_id>/report",
        evaluation_report,
        name="evaluation-report",
    ),
    path(
        "routes/evaluations/<int:evaluation_id>/progress",
        evaluation_progress,
        name="evaluation-progress",
    ),
    path(
        "routes/evaluations/<int:evaluation_id>/apply",
        evaluation_apply,
        name="evaluation-apply",
    ),
]
