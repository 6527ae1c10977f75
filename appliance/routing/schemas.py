"""Request and response bodies of the routing, cost and evaluation API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ninja import Field, Schema

from appliance.api.base import InSchema
from appliance.routing.models import Route

PRICE = Field(..., ge=0, max_digits=14, decimal_places=4)


class TaskClassIn(InSchema):
    name: str = Field(..., max_length=40)
    description: str = Field("", max_length=2000)
    examples: list[str] = Field(default_factory=list)


class TaskClassPatchIn(InSchema):
    description: str | None = Field(None, max_length=2000)
    examples: list[str] | None = None


class TaskClassOut(Schema):
    id: int
    name: str
    description: str
    examples: list[str]
    updated_at: datetime


class RuleIn(InSchema):
    kind: str = Field(..., max_length=16)
    value: str = Field("", max_length=500)
    task_class: str = Field(..., max_length=40)


class TierIn(InSchema):
    task_class: str = Field(..., max_length=40)
    model_id: int | None = None
    adapter_id: int | None = None
    route_id: int | None = None
    timeout_ms: int | None = Field(
        None, description="Give up on this tier after this long (not on the last tier)."
    )


class RouteIn(InSchema):
    """A route's whole definition: saved and checked as one."""

    name: str = Field(..., max_length=63)
    description: str = Field("", max_length=2000)
    status: str = "active"
    default_class: str = Field(..., max_length=40)
    rules: list[RuleIn] = Field(default_factory=list)
    tiers: list[TierIn] = Field(default_factory=list)
    embedding_model_id: int | None = None
    semantic_threshold: float = 0.3
    cost_ceiling: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=4)


class RuleOut(Schema):
    position: int
    kind: str
    value: str
    task_class: str = Field(alias="task_class.name")


class TierOut(Schema):
    task_class: str = Field(alias="task_class.name")
    position: int
    model_id: int | None
    model_name: str | None = Field(None, alias="model.name")
    adapter_id: int | None
    adapter_name: str | None = Field(None, alias="adapter.name")
    route_id: int | None = Field(None, alias="fallback_route_id")
    route_name: str | None = Field(None, alias="fallback_route.name")
    timeout_ms: int | None


class RouteOut(Schema):
    id: int
    name: str
    description: str
    status: str
    version: int
    default_class: str = Field(alias="default_class.name")
    embedding_model_id: int | None
    embedding_model_name: str | None = Field(None, alias="embedding_model.name")
    semantic_threshold: float
    cost_ceiling: Decimal | None
    rules: list[RuleOut]
    tiers: list[TierOut]
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_rules(route: Route) -> Any:
        return route.rules.select_related("task_class").order_by("position")

    @staticmethod
    def resolve_tiers(route: Route) -> Any:
        return route.tiers.select_related(
            "task_class", "model", "adapter", "fallback_route"
        ).order_by("task_class__name", "position")


class ReferencePriceIn(InSchema):
    name: str = Field(..., max_length=100)
    prompt_per_million: Decimal = PRICE
    completion_per_million: Decimal = PRICE
    is_default: bool = False
    notes: str = Field("", max_length=2000)


class ReferencePriceOut(Schema):
    id: int
    name: str
    prompt_per_million: Decimal
    completion_per_million: Decimal
    is_default: bool
    notes: str
    updated_at: datetime


class CostModelIn(InSchema):
    kind: str = Field(..., max_length=16)
    gpu_hour_price: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=4)
    gpu_count: int | None = None
    price_per_million: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=4)


class CostModelOut(Schema):
    deployment_id: int
    deployment: str = Field(alias="deployment.name")
    kind: str
    gpu_hour_price: Decimal | None
    gpu_count: int | None
    price_per_million: Decimal | None
    effective_per_million: Decimal | None
    measured_tokens: int
    measured_at: datetime | None


class CostFilter(Schema):
    since: datetime
    until: datetime
    reference_id: int | None = None
    application_id: int | None = None


class CostRowOut(Schema):
    application: str
    task_class: str
    route: str
    model: str
    adapter: str
    deployment: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal | None
    reference_cost: Decimal | None
    saving: Decimal | None


class CostReportOut(Schema):
    since: datetime
    until: datetime
    currency: str
    reference: str | None
    rows: list[CostRowOut]
    totals: dict[str, Any]


class EvaluationSetIn(InSchema):
    name: str = Field(..., max_length=100)
    description: str = Field("", max_length=2000)
    jsonl: str
    default_scorer: dict[str, Any] | None = None


class EvaluationSetOut(Schema):
    id: int
    name: str
    description: str
    item_count: int
    sha256: str
    created_at: datetime


class EvaluationIn(InSchema):
    evaluation_set_id: int
    candidates: list[str]
    target_score: float
    max_tokens: int = 64


class EvaluationOut(Schema):
    id: int
    evaluation_set_id: int
    evaluation_set: str = Field(alias="evaluation_set.name")
    candidates: list[str]
    target_score: float
    max_tokens: int
    status: str
    progress: float
    error: str
    report: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EvaluationApplyIn(InSchema):
    route_id: int
    task_class: str = Field(..., max_length=40)
