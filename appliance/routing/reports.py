"""The cost and savings report: per application, task class, route, model and deployment, what
the tokens cost on the appliance and what they would have cost at a hosted API's list price. It
reads the hourly usage rollups, never the raw records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum

from appliance.access.selectors import application_list
from appliance.accounts.permissions import Capability, allows, require
from appliance.core.actors import Actor
from appliance.core.errors import ValidationFailed
from appliance.core.times import refuse_naive
from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRollup
from appliance.routing.choices import CostKind
from appliance.routing.costs import CENT, MILLION, gpu_cost, token_prices
from appliance.routing.models import CostModel, ReferencePrice


@dataclass
class CostRow:
    application: str
    task_class: str
    route: str
    model: str
    adapter: str
    deployment: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None  # None: the deployment has no cost model
    reference_cost: Decimal | None = None
    saving: Decimal | None = None


@dataclass
class CostReport:
    since: datetime
    until: datetime
    currency: str
    reference: str | None
    rows: list[CostRow] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


def _reference_cost(row: CostRow, reference: ReferencePrice | None) -> Decimal | None:
    if reference is None:
        return None
    return (
        row.prompt_tokens * reference.prompt_per_million
        + row.completion_tokens * reference.completion_per_million
    ) / MILLION


def cost_report(
    *,
    actor: Actor,
    since: datetime,
    until: datetime,
    reference: ReferencePrice | None = None,
    application_id: int | None = None,
) -> CostReport:
    """Per application, task class, model and deployment: tokens, cost on the appliance, the
    same tokens at the reference price, and the saving. From the hourly rollups (recomputed
    every few minutes); GPU-hour prices are spread over all the tokens the deployment served."""
    require(actor, Capability.COSTS_VIEW)
    refuse_naive(since=since, until=until)
    if until <= since:
        raise ValidationFailed("`until` must be after `since`.", fields={"until": ["After since."]})
    reference = reference or ReferencePrice.objects.filter(is_default=True).first()
    rollups = UsageRollup.objects.filter(
        period=UsagePeriod.HOUR,
        start__gte=since,
        start__lt=until,
        application__in=application_list(actor=actor).order_by(),
    )
    if application_id is not None:
        rollups = rollups.filter(application_id=application_id)
    grouped = (
        rollups.values("application__name", "task_class", "route", "model", "adapter", "deployment")
        .annotate(
            requests=Sum("requests"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        .order_by("application__name", "task_class", "route", "model", "adapter", "deployment")
    )
    rows = [
        CostRow(
            application=g["application__name"],
            task_class=g["task_class"],
            route=g["route"],
            model=g["model"],
            adapter=g["adapter"],
            deployment=g["deployment"],
            requests=int(g["requests"] or 0),
            prompt_tokens=int(g["prompt"] or 0),
            completion_tokens=int(g["completion"] or 0),
        )
        for g in grouped
    ]
    costs = list(CostModel.objects.select_related("deployment"))
    measured = token_prices(costs, since, until)
    for row in rows:
        price = measured.get(row.deployment, (None, 0))[0]
        tokens = row.prompt_tokens + row.completion_tokens
        if price is not None:
            row.cost = (price * tokens).quantize(CENT)
        elif row.deployment == "" and tokens == 0:
            row.cost = Decimal(0)  # refused before any engine: nothing to pay for
        ref = _reference_cost(row, reference)
        row.reference_cost = ref.quantize(CENT) if ref is not None else None
        if row.cost is not None and row.reference_cost is not None:
            row.saving = row.reference_cost - row.cost
    totals = _totals(rows)
    # GPUs paid for that served nobody belong to no application: shown to those who see all.
    everything = application_id is None and allows(actor, Capability.APPS_VIEW_ALL)
    idle = sum(
        (
            gpu_cost(cost, since, until)
            for cost in costs
            if cost.kind == CostKind.GPU_HOUR and not measured[cost.deployment.name][1]
        ),
        Decimal(0),
    )
    totals["idle_gpu_cost"] = idle.quantize(CENT) if everything else None
    return CostReport(
        since=since,
        until=until,
        currency=settings.APPLIANCE_CURRENCY,
        reference=reference.name if reference else None,
        rows=rows,
        totals=totals,
    )


def _totals(rows: list[CostRow]) -> dict[str, Any]:
    def total(name: str) -> Decimal | None:
        values = [getattr(row, name) for row in rows]
        known = [v for v in values if v is not None]
        return sum(known, Decimal(0)) if known else None

    return {
        "requests": sum(row.requests for row in rows),
        "prompt_tokens": sum(row.prompt_tokens for row in rows),
        "completion_tokens": sum(row.completion_tokens for row in rows),
        "cost": total("cost"),
        "reference_cost": total("reference_cost"),
        "saving": total("saving"),
        "unpriced_rows": sum(1 for row in rows if row.cost is None),
    }
