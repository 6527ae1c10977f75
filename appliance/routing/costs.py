"""What the appliance's answers cost, and what the same tokens would have cost at a hosted API's
list price. A deployment's cost model is either a set price per million tokens or its GPUs'
hourly price amortised over the tokens it served (read from the hourly usage rollups)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.changes import access_changed
from appliance.core.errors import Conflict, ValidationFailed
from appliance.fleet.models import Deployment
from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRollup
from appliance.routing.choices import CostKind
from appliance.routing.models import CostModel, ReferencePrice

MILLION = Decimal(1_000_000)
CENT = Decimal("0.0001")
MEASURE_DAYS = 7  # the window the effective price per million is measured over
MAX_PRICE = Decimal("1000000")
MAX_EFFECTIVE = Decimal("9999999999.9999")  # numeric(14, 4)


def _price(name: str, value: Decimal | None, *, required: bool) -> Decimal | None:
    if value is None:
        if required:
            raise ValidationFailed(f"{name} is required.", fields={name: ["Required."]})
        return None
    if not value.is_finite() or not Decimal(0) <= value <= MAX_PRICE:
        raise ValidationFailed(
            f"{name} must be from 0 to {MAX_PRICE}.", fields={name: ["From 0 to 1000000."]}
        )
    return value.quantize(CENT)


# Reference prices ------------------------------------------------------------------------------


def reference_price_save(
    *,
    actor: Actor,
    name: str,
    prompt_per_million: Decimal,
    completion_per_million: Decimal,
    is_default: bool = False,
    notes: str = "",
    price: ReferencePrice | None = None,
) -> ReferencePrice:
    """Create or change a hosted API's list price (typed in by the admin: nothing is fetched).
    Making one the default takes the mark from the others."""
    require(actor, Capability.ROUTES_MANAGE)
    if not name.strip() or len(name) > 100:
        raise ValidationFailed("A name of 1 to 100 characters.", fields={"name": ["Required."]})
    prompt = _price("prompt_per_million", prompt_per_million, required=True)
    completion = _price("completion_per_million", completion_per_million, required=True)
    with transaction.atomic():
        if is_default:
            others = ReferencePrice.objects.all()
            if price is not None:
                others = others.exclude(pk=price.pk)
            others.update(is_default=False)
        price = price or ReferencePrice()
        created = price.pk is None
        price.name, price.notes, price.is_default = name.strip(), notes, is_default
        assert prompt is not None
        assert completion is not None
        price.prompt_per_million, price.completion_per_million = prompt, completion
        try:
            with transaction.atomic():
                price.save()
        except IntegrityError as exc:
            raise Conflict(
                f"A reference price named {name} exists.", code="duplicate_name"
            ) from exc
        audit_record(
            actor=actor,
            action="reference_price.create" if created else "reference_price.update",
            object_type="reference_price",
            object_id=price.pk,
            details={
                "name": price.name,
                "prompt_per_million": str(prompt),
                "completion_per_million": str(completion),
                "is_default": is_default,
                "currency": settings.APPLIANCE_CURRENCY,
            },
        )
    return price


def reference_price_delete(*, actor: Actor, price: ReferencePrice) -> None:
    require(actor, Capability.ROUTES_MANAGE)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="reference_price.delete",
            object_type="reference_price",
            object_id=price.pk,
            details={"name": price.name},
        )
        price.delete()


# Cost models -----------------------------------------------------------------------------------


def _gpus(cost: CostModel) -> int:
    """GPUs the price is paid for: as set, else the deployment's GPUs per replica times its
    replicas (a CPU deployment counts as one machine per replica)."""
    deployment = cost.deployment
    if cost.gpu_count:
        return cost.gpu_count
    per_replica = len(deployment.gpu_indices) or deployment.tensor_parallel_size or 1
    return per_replica * max(1, deployment.replicas)


def cost_model_set(
    *,
    actor: Actor,
    deployment: Deployment,
    kind: str,
    gpu_hour_price: Decimal | None = None,
    gpu_count: int | None = None,
    price_per_million: Decimal | None = None,
) -> CostModel:
    """Set how a deployment's answers are priced; the effective price is measured at once."""
    require(actor, Capability.ROUTES_MANAGE)
    if kind not in CostKind.values:
        raise ValidationFailed(
            "Unknown kind.", fields={"kind": [f"One of {', '.join(CostKind.values)}."]}
        )
    gpu_hour = _price("gpu_hour_price", gpu_hour_price, required=kind == CostKind.GPU_HOUR)
    per_million = _price(
        "price_per_million", price_per_million, required=kind == CostKind.PER_MILLION
    )
    if gpu_count is not None and not 1 <= gpu_count <= 4096:
        raise ValidationFailed("From 1 to 4096 GPUs.", fields={"gpu_count": ["From 1 to 4096."]})
    with transaction.atomic():
        cost, created = CostModel.objects.select_for_update().get_or_create(
            deployment=deployment, defaults={"kind": kind}
        )
        cost.kind = kind
        cost.gpu_hour_price = gpu_hour if kind == CostKind.GPU_HOUR else None
        cost.gpu_count = gpu_count if kind == CostKind.GPU_HOUR else None
        cost.price_per_million = per_million if kind == CostKind.PER_MILLION else None
        _measure([cost], timezone.now())
        cost.save()
        access_changed()  # routes' ceilings compare against the new price
        audit_record(
            actor=actor,
            action="cost_model.set",
            object_type="deployment",
            object_id=deployment.pk,
            details={
                "deployment": deployment.name,
                "kind": kind,
                "gpu_hour_price": str(cost.gpu_hour_price) if cost.gpu_hour_price else None,
                "gpu_count": cost.gpu_count,
                "price_per_million": str(cost.price_per_million)
                if cost.price_per_million
                else None,
                "currency": settings.APPLIANCE_CURRENCY,
                "created": created,
            },
        )
    return cost


def cost_model_delete(*, actor: Actor, cost: CostModel) -> None:
    require(actor, Capability.ROUTES_MANAGE)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="cost_model.delete",
            object_type="deployment",
            object_id=cost.deployment_id,
            details={"deployment": cost.deployment.name},
        )
        cost.delete()
        access_changed()


def _active_hours(deployment: Deployment, since: datetime, until: datetime) -> Decimal:
    """Hours of [since, until) during which the deployment existed."""
    start = max(since, deployment.created_at)
    end = min(until, deployment.removed_at or until, timezone.now())
    seconds = max(0.0, (end - start).total_seconds())
    return Decimal(seconds) / Decimal(3600)


def deployment_tokens(names: list[str], since: datetime, until: datetime) -> dict[str, int]:
    """Tokens each deployment served in the window, for every application (the price of its
    GPUs is shared over all of them)."""
    rows = (
        UsageRollup.objects.filter(
            period=UsagePeriod.HOUR, start__gte=since, start__lt=until, deployment__in=names
        )
        .values("deployment")
        .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        .order_by()
    )
    return {
        row["deployment"]: int(row["prompt"] or 0) + int(row["completion"] or 0) for row in rows
    }


def gpu_cost(cost: CostModel, since: datetime, until: datetime) -> Decimal:
    """What the deployment's GPUs cost over the window."""
    assert cost.gpu_hour_price is not None
    return cost.gpu_hour_price * _gpus(cost) * _active_hours(cost.deployment, since, until)


def token_prices(
    costs: Iterable[CostModel], since: datetime, until: datetime
) -> dict[str, tuple[Decimal | None, int]]:
    """Each cost model's price of one token over [since, until), by deployment name, with the
    tokens a GPU-hour-priced deployment served there (its GPUs' cost is spread over them; None
    when it served none). Set prices need no count: 0."""
    costs = list(costs)
    served = deployment_tokens(
        [cost.deployment.name for cost in costs if cost.kind == CostKind.GPU_HOUR], since, until
    )
    prices: dict[str, tuple[Decimal | None, int]] = {}
    for cost in costs:
        name = cost.deployment.name
        if cost.kind == CostKind.PER_MILLION:
            assert cost.price_per_million is not None
            prices[name] = (cost.price_per_million / MILLION, 0)
        else:
            tokens = served.get(name, 0)
            prices[name] = (gpu_cost(cost, since, until) / tokens if tokens else None, tokens)
    return prices


def _measure(costs: list[CostModel], now: datetime) -> None:
    """Each one's effective price per million tokens over the last week (None for GPU-hour
    pricing until the deployment has served tokens), from one query for them all."""
    measured = token_prices(costs, now - timedelta(days=MEASURE_DAYS), now)
    for cost in costs:
        per_token, cost.measured_tokens = measured[cost.deployment.name]
        cost.measured_at = now
        price = (per_token * MILLION).quantize(CENT) if per_token is not None else None
        # A few tokens over a week of GPUs would not fit the column; such a price is unknown.
        cost.effective_per_million = price if price is not None and price <= MAX_EFFECTIVE else None


def cost_refresh(*, now: datetime | None = None) -> int:
    """Re-measure every cost model's effective price (hourly job); the gateways pick the new
    prices up with their next key refresh. Not audited: a measurement, not a decision."""
    now = now or timezone.now()
    costs = list(CostModel.objects.select_related("deployment"))
    before = [cost.effective_per_million for cost in costs]
    with transaction.atomic():
        _measure(costs, now)
        changed = before != [cost.effective_per_million for cost in costs]
        CostModel.objects.bulk_update(
            costs, ["effective_per_million", "measured_tokens", "measured_at"]
        )
        if changed:
            access_changed()  # only then: it drops every gateway's cached keys
    return len(costs)
