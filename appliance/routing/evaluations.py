"""Evaluations on the customer's own data: an uploaded set of prompts with expected answers, run
against two or more candidates (models, adapters, routes) through the gateway itself, so each
answer takes the production path (grants, limits, routing, usage, audit). Answers are scored in
memory and dropped; only scores, timings, tokens and cost are kept. The report names the
smallest candidate that reaches the target score, and a route can be pointed at it in one step."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from appliance.access import services as access
from appliance.access.choices import DataPolicy
from appliance.access.models import Application, Grant
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.accounts.permissions import Capability, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.crypto import unwrap, wrap
from appliance.core.errors import Conflict, ValidationFailed
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing import services as routes
from appliance.routing.choices import EvaluationStatus, RouteStatus
from appliance.routing.evalsets import evaluation_items_parse
from appliance.routing.models import Evaluation, EvaluationSet, Route, TaskClass
from appliance.routing.scorers import Scorer

APPLICATION = "appliance-evaluations"
ITEMS_PURPOSE = "evaluation-set"
MAX_CANDIDATES = 8


def _purpose(sha256: str) -> str:
    return f"{ITEMS_PURPOSE}:{sha256}"


def seal_items(items: list[dict[str, Any]], sha256: str) -> str:
    """The items encrypted under the master key: prompts from the customer's own data (patient
    notes, say) are kept like any other content the appliance keeps, and deleting the set
    deletes them."""
    return wrap(json.dumps(items).encode(), purpose=_purpose(sha256))


def items_of(evaluation_set: EvaluationSet) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        unwrap(evaluation_set.items_sealed, purpose=_purpose(evaluation_set.sha256))
    )
    return items


def scorer_spec(scorer: Scorer) -> dict[str, Any]:
    """A parsed scorer as the JSON it parses from (stored with each item)."""
    spec: dict[str, Any] = {"type": scorer.kind}
    if scorer.kind in ("exact", "contains"):
        spec["case_sensitive"] = scorer.case_sensitive
    elif scorer.kind == "regex" and scorer.pattern is not None:
        spec["pattern"] = scorer.pattern
    elif scorer.kind == "json_schema":
        spec["schema"] = scorer.schema
    elif scorer.kind == "numeric":
        spec.update(tolerance=scorer.tolerance, relative=scorer.relative)
    return spec


def evaluation_set_create(
    *,
    actor: Actor,
    name: str,
    jsonl: str,
    description: str = "",
    default_scorer: dict[str, Any] | None = None,
) -> EvaluationSet:
    """Check every line (all problems reported at once, by line) and keep the set."""
    require(actor, Capability.EVALUATIONS_RUN)
    if not name.strip() or len(name) > 100:
        raise ValidationFailed("A name of 1 to 100 characters.", fields={"name": ["Required."]})
    items = evaluation_items_parse(jsonl, default_scorer=default_scorer)
    stored = [
        {"messages": item.messages, "expected": item.expected, "scorer": scorer_spec(item.scorer)}
        for item in items
    ]
    digest = hashlib.sha256(jsonl.encode()).hexdigest()
    with transaction.atomic():
        try:
            with transaction.atomic():
                evaluation_set = EvaluationSet.objects.create(
                    name=name.strip(),
                    description=description,
                    items_sealed=seal_items(stored, digest),
                    item_count=len(stored),
                    sha256=digest,
                    created_by=actor.user,
                )
        except IntegrityError as exc:
            raise Conflict(
                f"An evaluation set named {name} exists.", code="duplicate_name"
            ) from exc
        audit_record(
            actor=actor,
            action="evaluation_set.create",
            object_type="evaluation_set",
            object_id=evaluation_set.pk,
            details={
                "name": evaluation_set.name,
                "items": len(stored),
                "sha256": evaluation_set.sha256,
            },
        )
    return evaluation_set


def evaluation_set_delete(*, actor: Actor, evaluation_set: EvaluationSet) -> None:
    require(actor, Capability.EVALUATIONS_RUN)
    if evaluation_set.evaluations.exists():
        raise Conflict(
            "Evaluations were run on this set; their reports refer to it.", code="set_in_use"
        )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="evaluation_set.delete",
            object_type="evaluation_set",
            object_id=evaluation_set.pk,
            details={"name": evaluation_set.name, "sha256": evaluation_set.sha256},
        )
        evaluation_set.delete()


# Candidates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str  # model, adapter or route
    parameters: int
    model: BaseModel | None = None
    adapter: Adapter | None = None
    route: Route | None = None


def _route_parameters(route: Route, seen: frozenset[int] = frozenset()) -> int:
    """A route is as large as the largest model it may select, through the routes it falls
    back to as well."""
    sizes = [0]
    for tier in route.tiers.select_related("model", "fallback_route"):
        if tier.model is not None:
            sizes.append(tier.model.parameter_count)
        elif tier.fallback_route is not None and tier.fallback_route_id not in seen:
            sizes.append(_route_parameters(tier.fallback_route, seen | {route.pk}))
    return max(sizes)


def candidate_of(name: str) -> Candidate | None:
    """An approved text model, an approved adapter of one, or an active route, by name."""
    adapter = Adapter.objects.select_related("base_model").filter(name=name).first()
    if adapter is not None:
        base = adapter.base_model
        if adapter.status == EntryStatus.APPROVED and base.status == EntryStatus.APPROVED:
            return Candidate(name, "adapter", base.parameter_count, model=base, adapter=adapter)
        return None
    model = BaseModel.objects.filter(name=name).first()
    if model is not None:
        if model.status == EntryStatus.APPROVED and model.generates:
            return Candidate(name, "model", model.parameter_count, model=model)
        return None
    route = Route.objects.filter(name=name, status=RouteStatus.ACTIVE).first()
    if route is not None:
        return Candidate(name, "route", _route_parameters(route), route=route)
    return None


def _evaluation_application(actor: Actor) -> Application:
    """The application evaluations call the gateway as (created the first time, owned by the
    first admin); its usage is the evaluations' cost."""
    application = Application.objects.filter(name=APPLICATION).first()
    if application is not None:
        return application
    owner = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk").first()
    if owner is None:
        raise Conflict("An active admin must exist to own the evaluations.", code="no_admin")
    return access.application_create(
        actor=system_actor("evaluations"),
        name=APPLICATION,
        owner=owner,
        department="IT",
        data_policy=DataPolicy.NO_CONTENT,
        description="Runs evaluations through the gateway; its usage is what they cost.",
    )


def _grant(actor: Actor, application: Application, candidate: Candidate) -> None:
    granted = Grant.objects.filter(
        application=application,
        model=candidate.model if candidate.route is None else None,
        adapter=candidate.adapter,
        route=candidate.route,
    ).exists()
    if not granted:
        access.grant_create(
            actor=actor,
            application=application,
            model=candidate.model if candidate.route is None else None,
            adapter=candidate.adapter,
            route=candidate.route,
        )


def evaluation_create(
    *,
    actor: Actor,
    evaluation_set: EvaluationSet,
    candidates: list[str],
    target_score: float,
    max_tokens: int = 64,
    enqueue: bool = True,
) -> Evaluation:
    """Queue a run of the set against the candidates (granted to the evaluations application
    as needed, each grant audited)."""
    require(actor, Capability.EVALUATIONS_RUN)
    problems = []
    if not 2 <= len(candidates) <= MAX_CANDIDATES:
        problems.append(f"from 2 to {MAX_CANDIDATES} candidates")
    if len(set(candidates)) != len(candidates):
        problems.append("each candidate once")
    found = []
    for name in candidates:
        candidate = candidate_of(name)
        if candidate is None:
            problems.append(f"{name}: not an approved text model, adapter or active route")
        else:
            found.append(candidate)
    if problems:
        raise ValidationFailed(
            "The candidates cannot be evaluated.",
            code="invalid_candidates",
            fields={"candidates": problems},
        )
    if not 0.0 <= target_score <= 1.0 or math.isnan(target_score):
        raise ValidationFailed(
            "The target score is from 0 to 1.", fields={"target_score": ["From 0 to 1."]}
        )
    if not 1 <= max_tokens <= 4096:
        raise ValidationFailed("From 1 to 4096 tokens.", fields={"max_tokens": ["From 1 to 4096."]})
    with transaction.atomic():
        application = _evaluation_application(actor)
        for candidate in found:
            _grant(actor, application, candidate)
        evaluation = Evaluation.objects.create(
            evaluation_set=evaluation_set,
            candidates=candidates,
            target_score=target_score,
            max_tokens=max_tokens,
            created_by=actor.user,
        )
        audit_record(
            actor=actor,
            action="evaluation.create",
            object_type="evaluation",
            object_id=evaluation.pk,
            details={
                "evaluation_set": evaluation_set.name,
                "sha256": evaluation_set.sha256,
                "candidates": candidates,
                "target_score": target_score,
            },
        )
        if enqueue:
            from appliance.routing.tasks import run_evaluation

            pk = evaluation.pk
            transaction.on_commit(lambda: run_evaluation.delay(pk))
    return evaluation


def evaluation_apply(
    *, actor: Actor, evaluation: Evaluation, route: Route, task_class: TaskClass
) -> Route:
    """Point a route's task class at the evaluation's winner: it becomes the first tier, the
    class's other tiers stay behind it as fallbacks."""
    require(actor, Capability.ROUTES_MANAGE)
    winner_name = (evaluation.report or {}).get("smallest_meeting")
    if evaluation.status != EvaluationStatus.SUCCEEDED or not winner_name:
        raise Conflict(
            "This evaluation has no candidate that reached its target score.", code="no_winner"
        )
    winner = candidate_of(winner_name)
    if winner is None:
        raise Conflict(f"{winner_name} is no longer approved or active.", code="not_approved")
    if winner.route is not None and winner.route.pk == route.pk:
        raise Conflict("A route cannot fall back to itself.", code="fallback_cycle")
    first = routes.TierSpec(
        task_class=task_class.name,
        model_id=winner.model.pk if winner.model and winner.route is None else None,
        adapter_id=winner.adapter.pk if winner.adapter else None,
        route_id=winner.route.pk if winner.route else None,
    )
    definition = routes.definition_of(route)
    same = [t for t in definition.tiers if t.task_class == task_class.name]
    rest = [
        t
        for t in same
        if (t.model_id, t.adapter_id, t.route_id)
        != (first.model_id, first.adapter_id, first.route_id)
    ]
    others = [t for t in definition.tiers if t.task_class != task_class.name]
    changed = routes.RouteDefinition(**{**definition.__dict__, "tiers": [*others, first, *rest]})
    with transaction.atomic():
        updated = routes.route_update(actor=actor, route=route, definition=changed)
        audit_record(
            actor=actor,
            action="evaluation.apply",
            object_type="route",
            object_id=route.pk,
            details={
                "evaluation": evaluation.pk,
                "task_class": task_class.name,
                "target": winner_name,
            },
        )
    return updated
