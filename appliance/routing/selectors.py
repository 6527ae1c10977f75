"""Reading routes, task classes, prices, cost models and evaluations, for those who may."""

from __future__ import annotations

from django.db.models import QuerySet

from appliance.accounts.permissions import Capability, require
from appliance.core.actors import Actor
from appliance.routing.models import (
    CostModel,
    Evaluation,
    EvaluationSet,
    ReferencePrice,
    Route,
    TaskClass,
)


def route_list(*, actor: Actor) -> QuerySet[Route]:
    require(actor, Capability.ROUTES_VIEW)
    return Route.objects.select_related("default_class", "embedding_model").order_by("name")


def task_class_list(*, actor: Actor) -> QuerySet[TaskClass]:
    require(actor, Capability.ROUTES_VIEW)
    return TaskClass.objects.order_by("name")


def reference_price_list(*, actor: Actor) -> QuerySet[ReferencePrice]:
    require(actor, Capability.COSTS_VIEW)
    return ReferencePrice.objects.order_by("name")


def cost_model_list(*, actor: Actor) -> QuerySet[CostModel]:
    """Deployments' prices and measured tokens: fleet information, not for app owners (the
    tokens would tell them other applications' volume)."""
    require(actor, Capability.FLEET_VIEW)
    return CostModel.objects.select_related("deployment").order_by("deployment__name")


def evaluation_set_list(*, actor: Actor) -> QuerySet[EvaluationSet]:
    require(actor, Capability.EVALUATIONS_VIEW)
    return EvaluationSet.objects.order_by("name")


def evaluation_list(*, actor: Actor) -> QuerySet[Evaluation]:
    require(actor, Capability.EVALUATIONS_VIEW)
    return Evaluation.objects.select_related("evaluation_set").order_by("-created_at", "-id")
