"""What a route definition is, and every check it must pass before it is saved: names, task
classes, rules, tiers (approved, the right model, no duplicates), fallback cycles across routes,
and the semantic classifier's embedding model. Problems are collected and reported together."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from appliance.core.errors import Conflict, ValidationFailed
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing.choices import RouteStatus
from appliance.routing.matchers import rule_problem
from appliance.routing.models import Route, RouteTier, TaskClass

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_RULES = 100
MAX_TIERS_PER_CLASS = 8


@dataclass(frozen=True)
class RuleSpec:
    kind: str
    task_class: str
    value: str = ""


@dataclass(frozen=True)
class TierSpec:
    """A model (with an adapter of it, or not), or another route to escalate to."""

    task_class: str
    model_id: int | None = None
    adapter_id: int | None = None
    route_id: int | None = None
    timeout_ms: int | None = None


def refuse(detail: str, field: str, problems: list[str], code: str) -> None:
    if problems:
        raise ValidationFailed(detail, code=code, fields={field: problems[:50]})


def _check_name(name: str, route: Route | None) -> None:
    if not NAME.match(name):
        raise ValidationFailed(
            "A route name is 1 to 63 lower-case letters, digits, '.', '_' or '-'.",
            fields={"name": ["Lower-case letters, digits, '.', '_' or '-'; at most 63."]},
        )
    if BaseModel.objects.filter(name=name).exists() or Adapter.objects.filter(name=name).exists():
        raise Conflict(
            f"A model or adapter is named {name}; apps could not tell the route from it.",
            code="duplicate_name",
            fields={"name": ["A model or adapter has this name."]},
        )
    others = Route.objects.filter(name=name)
    if route is not None:
        others = others.exclude(pk=route.pk)
    if others.exists():
        raise Conflict(
            f"A route named {name} exists.",
            code="duplicate_name",
            fields={"name": ["A route has this name."]},
        )


def _classes(names: set[str]) -> dict[str, TaskClass]:
    found = {tc.name: tc for tc in TaskClass.objects.filter(name__in=names)}
    missing = sorted(names - set(found))
    refuse(
        "Unknown task classes.",
        "task_class",
        [f"{name}: no such task class" for name in missing],
        "unknown_task_class",
    )
    return found


def _check_rules(rules: list[RuleSpec]) -> list[str]:
    problems = []
    if len(rules) > MAX_RULES:
        problems.append(f"at most {MAX_RULES} rules")
    for i, rule in enumerate(rules):
        problem = rule_problem(rule.kind, rule.value)
        if problem:
            problems.append(f"rules[{i}]: {problem}")
    return problems


def _tier_target(i: int, spec: TierSpec, route: Route | None) -> tuple[Any, list[str]]:
    """The tier's model and adapter, or its route; and what is wrong with it."""
    where = f"tiers[{i}]"
    if spec.timeout_ms is not None and not 1 <= spec.timeout_ms <= 3_600_000:
        return None, [f"{where}: timeout_ms from 1 to 3600000"]
    if (spec.model_id is None) == (spec.route_id is None):
        return None, [f"{where}: name either a model (with an adapter or not) or a route"]
    if spec.route_id is not None:
        if spec.adapter_id is not None:
            return None, [f"{where}: an adapter goes with a model, not a route"]
        fallback = Route.objects.filter(pk=spec.route_id).first()
        if fallback is None:
            return None, [f"{where}: route {spec.route_id} does not exist"]
        if route is not None and fallback.pk == route.pk:
            return None, [f"{where}: a route cannot fall back to itself"]
        return fallback, []
    model = BaseModel.objects.filter(pk=spec.model_id or 0).first()
    if model is None:
        return None, [f"{where}: model {spec.model_id} does not exist"]
    problems = []
    if model.status != EntryStatus.APPROVED:
        problems.append(f"{where}: {model.name} is {model.status}, not approved")
    if not model.generates:
        problems.append(f"{where}: {model.name} is an embedding model; it cannot answer chats")
    adapter = None
    if spec.adapter_id is not None:
        adapter = Adapter.objects.filter(pk=spec.adapter_id).first()
        if adapter is None:
            problems.append(f"{where}: adapter {spec.adapter_id} does not exist")
        elif adapter.base_model_id != model.pk:
            problems.append(f"{where}: {adapter.name} is not an adapter of {model.name}")
        elif adapter.status != EntryStatus.APPROVED:
            problems.append(f"{where}: {adapter.name} is {adapter.status}, not approved")
    return (model, adapter), problems


def _fallbacks(route_id: int | None, extra: dict[int, set[int]]) -> dict[int, set[int]]:
    """Which routes each route escalates to, with this route's new tiers in place of its old."""
    edges: dict[int, set[int]] = {}
    rows = RouteTier.objects.filter(fallback_route__isnull=False).values_list(
        "route_id", "fallback_route_id"
    )
    for source, target in rows:
        if source != route_id:
            edges.setdefault(source, set()).add(target)
    for source, targets in extra.items():
        edges[source] = set(targets)
    return edges


def _cycle(start: int, edges: dict[int, set[int]]) -> list[int] | None:
    """A path of routes from ``start`` back to itself, if there is one."""
    stack: list[tuple[int, list[int]]] = [(start, [start])]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _check_embedding(model: BaseModel | None) -> list[str]:
    if model is None:
        return []
    problems = []
    if model.generates:
        problems.append(f"{model.name} generates text; choose an embedding model")
    if model.status != EntryStatus.APPROVED:
        problems.append(f"{model.name} is {model.status}, not approved")
    return problems


@dataclass(frozen=True)
class RouteDefinition:
    """Everything a route is, as an admin saves it."""

    name: str
    default_class: str
    rules: list[RuleSpec]
    tiers: list[TierSpec]
    description: str = ""
    status: str = RouteStatus.ACTIVE
    embedding_model_id: int | None = None
    semantic_threshold: float = 0.3
    cost_ceiling: Decimal | None = None


def validated(
    definition: RouteDefinition, route: Route | None
) -> tuple[dict[str, TaskClass], list[tuple[TierSpec, Any]], BaseModel | None]:
    _check_name(definition.name, route)
    if definition.status not in RouteStatus.values:
        raise ValidationFailed(
            "Unknown status.", fields={"status": [f"One of {', '.join(RouteStatus.values)}."]}
        )
    names = {definition.default_class}
    names |= {rule.task_class for rule in definition.rules}
    names |= {tier.task_class for tier in definition.tiers}
    classes = _classes(names)
    problems = _check_rules(definition.rules)
    refuse("Some rules cannot be used.", "rules", problems, "invalid_rules")
    targets: list[tuple[TierSpec, Any]] = []
    problems = []
    per_class: dict[str, list[Any]] = {}
    for i, spec in enumerate(definition.tiers):
        target, found = _tier_target(i, spec, route)
        problems += found
        if target is not None:
            targets.append((spec, target))
            chain = per_class.setdefault(spec.task_class, [])
            key = ("route", target.pk) if isinstance(target, Route) else target
            if key in chain:
                problems.append(f"tiers[{i}]: already in the {spec.task_class} chain")
            chain.append(key)
    for task_class, chain in per_class.items():
        if len(chain) > MAX_TIERS_PER_CLASS:
            problems.append(f"{task_class}: at most {MAX_TIERS_PER_CLASS} tiers")
    if definition.default_class not in per_class:
        problems.append(
            f"the default class {definition.default_class} needs at least one tier: "
            "every request a rule does not decide goes there"
        )
    refuse("The route's tiers cannot be used.", "tiers", problems, "invalid_tiers")
    if route is not None:
        edges = _fallbacks(
            route.pk,
            {route.pk: {t.pk for _, t in targets if isinstance(t, Route)}},
        )
        cycle = _cycle(route.pk, edges)
        if cycle:
            names_by_id = dict(Route.objects.values_list("pk", "name"))
            path = " → ".join(names_by_id.get(pk, definition.name) for pk in cycle)
            raise ValidationFailed(
                f"The fallback chain loops: {path}.",
                code="fallback_cycle",
                fields={"tiers": [f"cycle: {path}"]},
            )
    embedding = None
    if definition.embedding_model_id is not None:
        embedding = BaseModel.objects.filter(pk=definition.embedding_model_id).first()
        if embedding is None:
            raise ValidationFailed(
                "No such embedding model.", fields={"embedding_model_id": ["Does not exist."]}
            )
        examples = [tc.name for tc in classes.values() if tc.examples]
        problems = _check_embedding(embedding)
        if not examples:
            problems.append("none of the route's task classes has example prompts")
        refuse(
            "The semantic classifier cannot be used.",
            "embedding_model_id",
            problems,
            "invalid_embedding_model",
        )
    if not -1.0 <= definition.semantic_threshold <= 1.0:
        raise ValidationFailed(
            "The similarity threshold is from -1 to 1.",
            fields={"semantic_threshold": ["From -1 to 1."]},
        )
    if definition.cost_ceiling is not None and definition.cost_ceiling < 0:
        raise ValidationFailed(
            "The cost ceiling cannot be negative.", fields={"cost_ceiling": ["At least 0."]}
        )
    return classes, targets, embedding
