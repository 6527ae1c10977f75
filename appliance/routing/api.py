"""Routing API: task classes and routes (/api/v1/task-classes, /api/v1/routes), what things
cost (/api/v1/costs), and evaluations (/api/v1/evaluation-sets, /api/v1/evaluations)."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import paginate

from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.fleet import selectors as fleet_selectors
from appliance.routing import costs, evaluations, reports, selectors, services
from appliance.routing.models import Route
from appliance.routing.schemas import (
    CostFilter,
    CostModelIn,
    CostModelOut,
    CostReportOut,
    EvaluationApplyIn,
    EvaluationIn,
    EvaluationOut,
    EvaluationSetIn,
    EvaluationSetOut,
    ReferencePriceIn,
    ReferencePriceOut,
    RouteIn,
    RouteOut,
    TaskClassIn,
    TaskClassOut,
    TaskClassPatchIn,
)

READ = error_responses(401, 403, 404)
LIST = error_responses(401, 403)
WRITE = error_responses(401, 403, 404, 409, 422)

task_classes_router = Router(tags=["routing"])
routes_router = Router(tags=["routing"])
costs_router = Router(tags=["costs"])
evaluations_router = Router(tags=["evaluations"])


@task_classes_router.get("", response={200: list[TaskClassOut], **LIST})
@paginate(OrderedPagination)
def list_task_classes(request: HttpRequest) -> Any:
    return selectors.task_class_list(actor=actor_of(request))


@task_classes_router.post("", response={201: TaskClassOut, **WRITE})
def create_task_class(request: HttpRequest, payload: TaskClassIn) -> Status[Any]:
    """A kind of request routes tell apart; its example prompts teach semantic classifiers."""
    return Status(201, services.task_class_create(actor=actor_of(request), **payload.dict()))


@task_classes_router.get("/{task_class_id}", response={200: TaskClassOut, **READ})
def get_task_class(request: HttpRequest, task_class_id: int) -> Any:
    return get_or_404(
        selectors.task_class_list(actor=actor_of(request)), "task class", pk=task_class_id
    )


@task_classes_router.patch("/{task_class_id}", response={200: TaskClassOut, **WRITE})
def update_task_class(request: HttpRequest, task_class_id: int, payload: TaskClassPatchIn) -> Any:
    actor = actor_of(request)
    task_class = get_or_404(selectors.task_class_list(actor=actor), "task class", pk=task_class_id)
    return services.task_class_update(
        actor=actor, task_class=task_class, **payload.dict(exclude_unset=True)
    )


@task_classes_router.delete("/{task_class_id}", response={204: None, **WRITE})
def delete_task_class(request: HttpRequest, task_class_id: int) -> Status[None]:
    actor = actor_of(request)
    task_class = get_or_404(selectors.task_class_list(actor=actor), "task class", pk=task_class_id)
    services.task_class_delete(actor=actor, task_class=task_class)
    return Status(204, None)


def _definition(payload: RouteIn) -> services.RouteDefinition:
    data = payload.dict()
    return services.RouteDefinition(
        **{
            **data,
            "rules": [services.RuleSpec(**rule) for rule in data["rules"]],
            "tiers": [services.TierSpec(**tier) for tier in data["tiers"]],
        }
    )


def _route(request: HttpRequest, route_id: int) -> Route:
    return get_or_404(selectors.route_list(actor=actor_of(request)), "route", pk=route_id)


@routes_router.get("", response={200: list[RouteOut], **LIST})
@paginate(OrderedPagination)
def list_routes(request: HttpRequest) -> Any:
    return selectors.route_list(actor=actor_of(request))


@routes_router.post("", response={201: RouteOut, **WRITE})
def create_route(request: HttpRequest, payload: RouteIn) -> Status[Any]:
    """A virtual model: ordered rules (and optionally a semantic classifier) pick a task class,
    whose tiers are tried in order. Refused whole, with reasons, if any part cannot be used."""
    route = services.route_create(actor=actor_of(request), definition=_definition(payload))
    return Status(201, route)


@routes_router.get("/{route_id}", response={200: RouteOut, **READ})
def get_route(request: HttpRequest, route_id: int) -> Any:
    return _route(request, route_id)


@routes_router.put("/{route_id}", response={200: RouteOut, **WRITE})
def replace_route(request: HttpRequest, route_id: int, payload: RouteIn) -> Any:
    """Replace the whole definition; gateways use it from their next request."""
    return services.route_update(
        actor=actor_of(request), route=_route(request, route_id), definition=_definition(payload)
    )


@routes_router.delete("/{route_id}", response={204: None, **WRITE})
def delete_route(request: HttpRequest, route_id: int) -> Status[None]:
    services.route_delete(actor=actor_of(request), route=_route(request, route_id))
    return Status(204, None)


@costs_router.get("", response={200: CostReportOut, **error_responses(401, 403, 404, 422)})
def cost_report(request: HttpRequest, filters: Query[CostFilter]) -> Any:
    """Per application, task class, model and deployment: tokens, cost on the appliance, the
    same tokens at a reference price (the default one unless named), and the saving."""
    actor = actor_of(request)
    reference = (
        get_or_404(
            selectors.reference_price_list(actor=actor), "reference price", pk=filters.reference_id
        )
        if filters.reference_id is not None
        else None
    )
    return reports.cost_report(
        actor=actor,
        since=filters.since,
        until=filters.until,
        reference=reference,
        application_id=filters.application_id,
    )


@costs_router.get("/reference-prices", response={200: list[ReferencePriceOut], **LIST})
@paginate(OrderedPagination)
def list_reference_prices(request: HttpRequest) -> Any:
    return selectors.reference_price_list(actor=actor_of(request))


@costs_router.post("/reference-prices", response={201: ReferencePriceOut, **WRITE})
def create_reference_price(request: HttpRequest, payload: ReferencePriceIn) -> Status[Any]:
    """A hosted API's list price per million tokens (typed in; nothing is fetched)."""
    price = costs.reference_price_save(actor=actor_of(request), **payload.dict())
    return Status(201, price)


@costs_router.put("/reference-prices/{price_id}", response={200: ReferencePriceOut, **WRITE})
def replace_reference_price(request: HttpRequest, price_id: int, payload: ReferencePriceIn) -> Any:
    actor = actor_of(request)
    price = get_or_404(selectors.reference_price_list(actor=actor), "reference price", pk=price_id)
    return costs.reference_price_save(actor=actor, price=price, **payload.dict())


@costs_router.delete("/reference-prices/{price_id}", response={204: None, **WRITE})
def delete_reference_price(request: HttpRequest, price_id: int) -> Status[None]:
    actor = actor_of(request)
    price = get_or_404(selectors.reference_price_list(actor=actor), "reference price", pk=price_id)
    costs.reference_price_delete(actor=actor, price=price)
    return Status(204, None)


@costs_router.get("/models", response={200: list[CostModelOut], **LIST})
@paginate(OrderedPagination)
def list_cost_models(request: HttpRequest) -> Any:
    return selectors.cost_model_list(actor=actor_of(request))


@costs_router.put("/models/{deployment_id}", response={200: CostModelOut, **WRITE})
def set_cost_model(request: HttpRequest, deployment_id: int, payload: CostModelIn) -> Any:
    """How a deployment is priced: `gpu_hour` (its GPUs' hourly price, amortised over the tokens
    it serves) or `per_million` (a set price per million tokens)."""
    actor = actor_of(request)
    deployment = get_or_404(
        fleet_selectors.deployment_list(actor=actor), "deployment", pk=deployment_id
    )
    return costs.cost_model_set(actor=actor, deployment=deployment, **payload.dict())


@costs_router.delete("/models/{deployment_id}", response={204: None, **WRITE})
def delete_cost_model(request: HttpRequest, deployment_id: int) -> Status[None]:
    actor = actor_of(request)
    cost = get_or_404(
        selectors.cost_model_list(actor=actor), "cost model", deployment_id=deployment_id
    )
    costs.cost_model_delete(actor=actor, cost=cost)
    return Status(204, None)


@evaluations_router.get("/sets", response={200: list[EvaluationSetOut], **LIST})
@paginate(OrderedPagination)
def list_evaluation_sets(request: HttpRequest) -> Any:
    return selectors.evaluation_set_list(actor=actor_of(request))


@evaluations_router.post("/sets", response={201: EvaluationSetOut, **WRITE})
def create_evaluation_set(request: HttpRequest, payload: EvaluationSetIn) -> Status[Any]:
    """JSONL, one item per line: `messages`, `expected`, `scorer` (exact, contains, regex,
    json_schema, numeric). Every bad line is reported, by number."""
    evaluation_set = evaluations.evaluation_set_create(actor=actor_of(request), **payload.dict())
    return Status(201, evaluation_set)


@evaluations_router.delete("/sets/{set_id}", response={204: None, **WRITE})
def delete_evaluation_set(request: HttpRequest, set_id: int) -> Status[None]:
    actor = actor_of(request)
    evaluation_set = get_or_404(
        selectors.evaluation_set_list(actor=actor), "evaluation set", pk=set_id
    )
    evaluations.evaluation_set_delete(actor=actor, evaluation_set=evaluation_set)
    return Status(204, None)


@evaluations_router.get("", response={200: list[EvaluationOut], **LIST})
@paginate(OrderedPagination)
def list_evaluations(request: HttpRequest) -> Any:
    return selectors.evaluation_list(actor=actor_of(request))


@evaluations_router.post("", response={202: EvaluationOut, **WRITE})
def create_evaluation(request: HttpRequest, payload: EvaluationIn) -> Status[Any]:
    """Run a set against two or more models, adapters or routes through the gateway, as a job;
    poll it for progress and the report."""
    actor = actor_of(request)
    evaluation_set = get_or_404(
        selectors.evaluation_set_list(actor=actor),
        "evaluation set",
        pk=payload.evaluation_set_id,
    )
    evaluation = evaluations.evaluation_create(
        actor=actor,
        evaluation_set=evaluation_set,
        candidates=payload.candidates,
        target_score=payload.target_score,
        max_tokens=payload.max_tokens,
    )
    evaluation.refresh_from_db()  # an eager run (embedded mode) has finished already
    return Status(202, evaluation)


@evaluations_router.get("/{evaluation_id}", response={200: EvaluationOut, **READ})
def get_evaluation(request: HttpRequest, evaluation_id: int) -> Any:
    return get_or_404(
        selectors.evaluation_list(actor=actor_of(request)), "evaluation", pk=evaluation_id
    )


@evaluations_router.post("/{evaluation_id}/apply", response={200: RouteOut, **WRITE})
def apply_evaluation(request: HttpRequest, evaluation_id: int, payload: EvaluationApplyIn) -> Any:
    """Make the smallest candidate that met the target the first tier of a route's task class."""
    actor = actor_of(request)
    evaluation = get_or_404(selectors.evaluation_list(actor=actor), "evaluation", pk=evaluation_id)
    route = get_or_404(selectors.route_list(actor=actor), "route", pk=payload.route_id)
    task_class = get_or_404(
        selectors.task_class_list(actor=actor), "task class", name=payload.task_class
    )
    return evaluations.evaluation_apply(
        actor=actor, evaluation=evaluation, route=route, task_class=task_class
    )
