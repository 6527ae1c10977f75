"""Task classes and routes: the only place they change. A route is saved whole (its rules and
tiers with it), checked as a whole, and every change raises its version, drops the gateways'
cached plans and writes an audit event in the same transaction."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from appliance.accounts.permissions import Capability, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.changes import access_changed
from appliance.core.errors import Conflict, ValidationFailed
from appliance.routing.definitions import (
    NAME,
    RouteDefinition,
    RuleSpec,
    TierSpec,
    refuse,
    validated,
)
from appliance.routing.models import Route, RouteRule, RouteTier, TaskClass

MAX_EXAMPLES = 50
MAX_EXAMPLE_CHARS = 500


# Task classes ----------------------------------------------------------------------------------


def _check_examples(examples: list[str]) -> None:
    problems = [
        f"examples[{i}]: 1 to {MAX_EXAMPLE_CHARS} characters"
        for i, text in enumerate(examples)
        if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_EXAMPLE_CHARS
    ]
    if len(examples) > MAX_EXAMPLES:
        problems.append(f"at most {MAX_EXAMPLES} examples")
    refuse("Some example prompts cannot be used.", "examples", problems, "invalid_examples")


def task_class_create(
    *, actor: Actor, name: str, description: str = "", examples: list[str] | None = None
) -> TaskClass:
    """A new task class; its example prompts teach routes' semantic classifiers."""
    require(actor, Capability.ROUTES_MANAGE)
    if not NAME.match(name) or len(name) > 40:
        raise ValidationFailed(
            "A task class name is 1 to 40 lower-case letters, digits, '.', '_' or '-'.",
            fields={"name": ["Lower-case letters, digits, '.', '_' or '-'; at most 40."]},
        )
    examples = [text.strip() for text in examples or []]
    _check_examples(examples)
    with transaction.atomic():
        try:
            with transaction.atomic():
                task_class = TaskClass.objects.create(
                    name=name, description=description, examples=examples
                )
        except IntegrityError as exc:
            raise Conflict(
                f"A task class named {name} exists.",
                code="duplicate_name",
                fields={"name": ["A task class has this name."]},
            ) from exc
        audit_record(
            actor=actor,
            action="task_class.create",
            object_type="task_class",
            object_id=task_class.pk,
            details={"name": name, "examples": len(examples)},
        )
    return task_class


def task_class_update(
    *,
    actor: Actor,
    task_class: TaskClass,
    description: str | None = None,
    examples: list[str] | None = None,
) -> TaskClass:
    """New description or examples; routes using the class re-embed its examples."""
    require(actor, Capability.ROUTES_MANAGE)
    if examples is not None:
        examples = [text.strip() for text in examples]
        _check_examples(examples)
    with transaction.atomic():
        if description is not None:
            task_class.description = description
        if examples is not None:
            task_class.examples = examples
        task_class.save()
        # Examples are compiled into the plans of the routes that use the class.
        _routes_changed(Route.objects.filter(pk__in=_routes_using(task_class)))
        audit_record(
            actor=actor,
            action="task_class.update",
            object_type="task_class",
            object_id=task_class.pk,
            details={"name": task_class.name, "examples": len(task_class.examples)},
        )
    return task_class


def _routes_using(task_class: TaskClass) -> set[int]:
    return {
        *Route.objects.filter(default_class=task_class).values_list("pk", flat=True),
        *RouteRule.objects.filter(task_class=task_class).values_list("route_id", flat=True),
        *RouteTier.objects.filter(task_class=task_class).values_list("route_id", flat=True),
    }


def task_class_delete(*, actor: Actor, task_class: TaskClass) -> None:
    """Refused while a route uses it."""
    require(actor, Capability.ROUTES_MANAGE)
    users = sorted(
        Route.objects.filter(pk__in=_routes_using(task_class)).values_list("name", flat=True)
    )
    if users:
        raise Conflict(
            f"Task class {task_class.name} is used by route(s) {', '.join(users)}.",
            code="task_class_in_use",
        )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="task_class.delete",
            object_type="task_class",
            object_id=task_class.pk,
            details={"name": task_class.name},
        )
        task_class.delete()


# Routes ----------------------------------------------------------------------------------------


def _routes_changed(routes: Any) -> None:
    routes.update(version=F("version") + 1)
    access_changed()  # gateways drop cached keys, and with them their compiled routes


def _write_parts(
    route: Route,
    definition: RouteDefinition,
    classes: dict[str, TaskClass],
    targets: list[tuple[TierSpec, Any]],
) -> None:
    route.rules.all().delete()
    route.tiers.all().delete()
    RouteRule.objects.bulk_create(
        RouteRule(
            route=route,
            position=i + 1,
            kind=rule.kind,
            value=rule.value,
            task_class=classes[rule.task_class],
        )
        for i, rule in enumerate(definition.rules)
    )
    positions: dict[str, int] = {}
    tiers = []
    for spec, target in targets:
        position = positions[spec.task_class] = positions.get(spec.task_class, -1) + 1
        tier = RouteTier(
            route=route,
            task_class=classes[spec.task_class],
            position=position,
            timeout_ms=spec.timeout_ms,
        )
        if isinstance(target, Route):
            tier.fallback_route = target
        else:
            tier.model, tier.adapter = target
        tiers.append(tier)
    RouteTier.objects.bulk_create(tiers)


def _summary(route: Route, definition: RouteDefinition) -> dict[str, Any]:
    """What the audit event records of a route: its whole definition, by names."""
    return {
        "name": route.name,
        "version": route.version,
        "status": route.status,
        "default_class": definition.default_class,
        "rules": [[r.kind, r.value, r.task_class] for r in definition.rules],
        "tiers": [
            [t.task_class, t.model_id, t.adapter_id, t.route_id, t.timeout_ms]
            for t in definition.tiers
        ],
        "embedding_model_id": definition.embedding_model_id,
        "semantic_threshold": definition.semantic_threshold,
        "cost_ceiling": str(definition.cost_ceiling)
        if definition.cost_ceiling is not None
        else None,
    }


def route_create(*, actor: Actor, definition: RouteDefinition) -> Route:
    """A new route, checked whole: names, rules, tiers (approved, reachable, no cycles)."""
    require(actor, Capability.ROUTES_MANAGE)
    classes, targets, embedding = validated(definition, None)
    with transaction.atomic():
        try:
            with transaction.atomic():
                route = Route.objects.create(
                    name=definition.name,
                    description=definition.description,
                    status=definition.status,
                    default_class=classes[definition.default_class],
                    embedding_model=embedding,
                    semantic_threshold=definition.semantic_threshold,
                    cost_ceiling=definition.cost_ceiling,
                    created_by=actor.user,
                )
        except IntegrityError as exc:
            raise Conflict(
                f"A route named {definition.name} exists.", code="duplicate_name"
            ) from exc
        _write_parts(route, definition, classes, targets)
        audit_record(
            actor=actor,
            action="route.create",
            object_type="route",
            object_id=route.pk,
            details=_summary(route, definition),
        )
    return route


def route_update(*, actor: Actor, route: Route, definition: RouteDefinition) -> Route:
    """Replace a route's whole definition; the gateways use the new one from the next request."""
    require(actor, Capability.ROUTES_MANAGE)
    with transaction.atomic():
        # One route change at a time, so two changes cannot each pass the cycle check with the
        # other's fallback not yet written (A→B and B→A).
        list(Route.objects.select_for_update().order_by("pk").only("pk"))
        classes, targets, embedding = validated(definition, route)
        route = Route.objects.select_for_update().get(pk=route.pk)
        route.name = definition.name
        route.description = definition.description
        route.status = definition.status
        route.default_class = classes[definition.default_class]
        route.embedding_model = embedding
        route.semantic_threshold = definition.semantic_threshold
        route.cost_ceiling = definition.cost_ceiling
        route.version += 1
        route.save()
        _write_parts(route, definition, classes, targets)
        access_changed()
        audit_record(
            actor=actor,
            action="route.update",
            object_type="route",
            object_id=route.pk,
            details=_summary(route, definition),
        )
    return route


def route_delete(*, actor: Actor, route: Route) -> None:
    """Refused while it is granted to an application or another route escalates to it."""
    require(actor, Capability.ROUTES_MANAGE)
    granted = sorted(route.grants.values_list("application__name", flat=True))
    if granted:
        raise Conflict(
            f"Route {route.name} is granted to {', '.join(granted)}; withdraw the grants first.",
            code="route_in_use",
        )
    escalating = sorted(
        set(RouteTier.objects.filter(fallback_route=route).values_list("route__name", flat=True))
    )
    if escalating:
        raise Conflict(
            f"Route(s) {', '.join(escalating)} fall back to {route.name}.",
            code="route_in_use",
        )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="route.delete",
            object_type="route",
            object_id=route.pk,
            details={"name": route.name, "version": route.version},
        )
        route.delete()
        access_changed()


def definition_of(route: Route) -> RouteDefinition:
    """A saved route as a definition (to change one part of it and save it whole)."""
    return RouteDefinition(
        name=route.name,
        description=route.description,
        status=route.status,
        default_class=route.default_class.name,
        rules=[
            RuleSpec(kind=r.kind, value=r.value, task_class=r.task_class.name)
            for r in route.rules.select_related("task_class").order_by("position")
        ],
        tiers=[
            TierSpec(
                task_class=t.task_class.name,
                model_id=t.model_id,
                adapter_id=t.adapter_id,
                route_id=t.fallback_route_id,
                timeout_ms=t.timeout_ms,
            )
            for t in route.tiers.select_related("task_class").order_by(
                "task_class__name", "position"
            )
        ],
        embedding_model_id=route.embedding_model_id,
        semantic_threshold=route.semantic_threshold,
        cost_ceiling=route.cost_ceiling,
    )
