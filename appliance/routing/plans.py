"""Routes compiled for the gateway: rules with their matchers, and each task class's fallback
chain flattened into concrete targets (another route's chain spliced in where a tier escalates to
it), with what each target costs. Built when a key is resolved and cached with it, so deciding a
request touches no database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from appliance.access.models import Grant
from appliance.fleet.choices import DeploymentStatus
from appliance.fleet.models import Deployment
from appliance.gateway.targets import Target, approved, target_of
from appliance.registry.choices import EntryStatus
from appliance.routing.choices import RouteStatus
from appliance.routing.matchers import Matcher, matcher_for
from appliance.routing.models import CostModel, Route, RouteTier, TaskClass

TargetKey = tuple[int, str]  # (model id, adapter name or "")


@dataclass(frozen=True)
class Rule:
    position: int
    kind: str
    task_class: str
    matcher: Matcher


@dataclass(frozen=True)
class Tier:
    """One target of a chain, with its timeout and its price per million tokens (None: no cost
    model, so no ceiling can exclude it)."""

    target: Target
    timeout_ms: int | None = None
    price_per_million: float | None = None
    parameters: int = 0


@dataclass(frozen=True)
class RoutePlan:
    route_id: int
    name: str
    version: int
    created: int
    default_class: str
    classes: frozenset[str]
    rules: tuple[Rule, ...] = ()
    chains: dict[str, tuple[Tier, ...]] = field(default_factory=dict)
    embedding_model_id: int | None = None
    examples: tuple[tuple[str, str], ...] = ()  # (task class, example prompt)
    semantic_threshold: float = 0.0
    cost_ceiling: float | None = None

    def chain(self, task_class: str) -> tuple[Tier, ...]:
        """The class's own tiers, or the default class's where it has none."""
        return self.chains.get(task_class) or self.chains.get(self.default_class, ())


def target_prices() -> dict[TargetKey, float]:
    """The cheapest measured price per million tokens of any active deployment serving each
    model and adapter."""
    prices: dict[TargetKey, float] = {}
    costs = CostModel.objects.filter(
        deployment__status=DeploymentStatus.ACTIVE, effective_per_million__isnull=False
    ).select_related("deployment")
    adapters: dict[int, list[str]] = defaultdict(list)
    for name, deployment_id in Deployment.adapters.through.objects.values_list(
        "adapter__name", "deployment_id"
    ):
        adapters[deployment_id].append(name)
    for cost in costs:
        assert cost.effective_per_million is not None
        price = float(cost.effective_per_million)
        deployment = cost.deployment
        for adapter in ["", *adapters[deployment.pk]]:
            key = (deployment.model_id, adapter)
            prices[key] = min(price, prices.get(key, price))
    return prices


def _tiers_by_route() -> dict[int, dict[str, list[RouteTier]]]:
    tiers: dict[int, dict[str, list[RouteTier]]] = defaultdict(lambda: defaultdict(list))
    rows = RouteTier.objects.select_related(
        "task_class", "model__artifact", "adapter__artifact"
    ).order_by("route_id", "task_class_id", "position")
    for tier in rows:
        tiers[tier.route_id][tier.task_class.name].append(tier)
    return tiers


class _Compiler:
    """Flattens chains across routes; what every route of the application shares is read once."""

    def __init__(self) -> None:
        self.routes = {
            route.pk: route
            for route in Route.objects.select_related("default_class", "embedding_model")
        }
        self.tiers = _tiers_by_route()
        self.prices = target_prices()

    def chain(self, route_id: int, task_class: str, seen: frozenset[int]) -> list[Tier]:
        """The route's chain for the class (its default class's if it has none for it); a
        route already on the path is skipped (cycles are refused when routes are saved)."""
        route = self.routes[route_id]
        tiers = self.tiers[route_id].get(task_class) or self.tiers[route_id].get(
            route.default_class.name, []
        )
        chain: list[Tier] = []
        for tier in tiers:
            if tier.fallback_route_id is not None:
                if tier.fallback_route_id not in seen:
                    chain += self.chain(tier.fallback_route_id, task_class, seen | {route_id})
                continue
            assert tier.model is not None
            if not approved(tier.model, tier.adapter):
                continue
            target = target_of(tier.model, tier.adapter)
            chain.append(
                Tier(
                    target=target,
                    timeout_ms=tier.timeout_ms,
                    price_per_million=self.prices.get((target.model_id, target.adapter_name)),
                    parameters=tier.model.parameter_count,
                )
            )
        return chain

    def plan(self, route: Route) -> RoutePlan:
        classes = {route.default_class.name, *self.tiers[route.pk]}
        rules = tuple(
            Rule(r.position, r.kind, r.task_class.name, matcher_for(r.kind, r.value))
            for r in route.rules.select_related("task_class").order_by("position")
        )
        classes |= {rule.task_class for rule in rules}
        chains: dict[str, tuple[Tier, ...]] = {}
        for task_class in sorted(classes):
            unique: dict[TargetKey, Tier] = {}
            for tier in self.chain(route.pk, task_class, frozenset()):
                unique.setdefault((tier.target.model_id, tier.target.adapter_name), tier)
            chains[task_class] = tuple(unique.values())
        examples: tuple[tuple[str, str], ...] = ()
        embedder = route.embedding_model
        if embedder is not None and embedder.status != EntryStatus.APPROVED:
            embedder = None  # quarantined or retired: no prompt goes to it
        if embedder is not None:
            examples = tuple(
                (task_class.name, str(example))
                for task_class in TaskClass.objects.filter(name__in=classes).order_by("name")
                for example in task_class.examples
            )
        return RoutePlan(
            route_id=route.pk,
            name=route.name,
            version=route.version,
            created=int(route.created_at.timestamp()),
            default_class=route.default_class.name,
            classes=frozenset(classes),
            rules=rules,
            chains=chains,
            embedding_model_id=embedder.pk if embedder is not None else None,
            examples=examples,
            semantic_threshold=route.semantic_threshold,
            cost_ceiling=float(route.cost_ceiling) if route.cost_ceiling is not None else None,
        )


def route_plans(application_id: int) -> dict[str, RoutePlan]:
    """The active routes granted to the application, compiled."""
    route_ids = list(
        Grant.objects.filter(
            application_id=application_id,
            route__isnull=False,
            route__status=RouteStatus.ACTIVE,
        ).values_list("route_id", flat=True)
    )
    if not route_ids:
        return {}
    compiler = _Compiler()
    return {
        compiler.routes[pk].name: compiler.plan(compiler.routes[pk])
        for pk in route_ids
        if pk in compiler.routes
    }
