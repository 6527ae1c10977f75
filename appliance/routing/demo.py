"""The default task classes and the demo route ``auto`` of ``make run``: six task classes with
example prompts (appliance/routing/data/task_examples.json, written for the classifier, not taken
from traffic), ordered rules that decide most requests in microseconds, and tiers over the demo
model and its triage adapter. The same rules are what ``make bench-routing`` measures."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction

from appliance.access import services as access
from appliance.access.models import Application, Grant
from appliance.core.actors import Actor
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing import services
from appliance.routing.choices import RuleKind
from appliance.routing.models import Route, TaskClass
from appliance.routing.services import RouteDefinition, RuleSpec, TierSpec

ROUTE = "auto"
EXAMPLES = Path(__file__).with_name("data") / "task_examples.json"
DESCRIPTIONS = {
    "extraction": "Pull fields or entities out of the text given (often as JSON).",
    "classification": "Give the text a label: category, priority, intent, sentiment.",
    "code": "Write, fix, explain or convert code and queries.",
    "math": "Calculations and quantitative reasoning.",
    "summarisation": "Condense the text given.",
    "general": "Everything else: questions, drafting, explanations.",
}
DEFAULT_CLASS = "general"

# First match wins: structure and code before words, words before the numbers test (a request
# to summarise a note full of figures is a summary, not arithmetic).
RULES: tuple[RuleSpec, ...] = (
    RuleSpec(RuleKind.JSON_SCHEMA, "extraction"),
    RuleSpec(
        RuleKind.KEYWORD,
        "code",
        "python, sql, regex, regular expression, function, script, query, bug, stack trace, "
        "javascript, typescript, bash, powershell, excel formula, unit test, refactor, "
        "dataframe, pandas, compile, snippet",
    ),
    RuleSpec(RuleKind.HAS_CODE, "code"),
    RuleSpec(
        RuleKind.KEYWORD,
        "summarisation",
        "summar, tl;dr, tldr, gist, condense, shorten, key points, main points, recap, "
        "in a nutshell, brief overview, boil down, digest",
    ),
    RuleSpec(
        RuleKind.KEYWORD,
        "extraction",
        "extract, pull out, list every, list all, list each, fields, parse, return json, "
        "as json, json with, identify the, find every, capture the, which medications",
    ),
    RuleSpec(
        RuleKind.KEYWORD,
        "classification",
        "classify, categor, label, triage, which department, which team, route this, "
        "sentiment, spam, fraudulent, priority, urgency, is this a, is this an, tag this, "
        "assign a, one of",
    ),
    RuleSpec(
        RuleKind.KEYWORD,
        "math",
        "calculate, compute, how many, how much, percent, interest rate, dose, dosage, "
        "average, mean, median, total, convert, per hour, per day, ratio, probability",
    ),
    RuleSpec(RuleKind.HAS_NUMBERS, "math"),
)


def task_examples() -> dict[str, list[str]]:
    loaded: dict[str, list[str]] = json.loads(EXAMPLES.read_text())
    return loaded


def task_classes_install(*, actor: Actor) -> dict[str, TaskClass]:
    """The six default task classes with their examples, those that do not exist yet."""
    examples = task_examples()
    found = {tc.name: tc for tc in TaskClass.objects.filter(name__in=DESCRIPTIONS)}
    for name, description in DESCRIPTIONS.items():
        if name not in found:
            found[name] = services.task_class_create(
                actor=actor, name=name, description=description, examples=examples.get(name, [])
            )
    return found


def demo_definition(
    model: BaseModel, adapter: Adapter | None, embedding: BaseModel | None
) -> RouteDefinition:
    """Classification and extraction try the triage adapter first, then the base model; the
    rest go to the base model."""
    tiers: list[TierSpec] = []
    for task_class in DESCRIPTIONS:
        if adapter is not None and task_class in ("classification", "extraction"):
            tiers.append(TierSpec(task_class, model_id=model.pk, adapter_id=adapter.pk))
        tiers.append(TierSpec(task_class, model_id=model.pk))
    return RouteDefinition(
        name=ROUTE,
        description="Demo route (make run): rules, then the semantic classifier where the "
        "embedding model is deployed, pick the task class.",
        default_class=DEFAULT_CLASS,
        rules=list(RULES),
        tiers=tiers,
        embedding_model_id=embedding.pk if embedding is not None else None,
        semantic_threshold=0.3,
    )


def demo_route_install(
    *, actor: Actor, application: Application, model_name: str, adapter_name: str, embedding: str
) -> Route | None:
    """The route ``auto`` over the demo model and adapter (and the embedding model, if it is
    approved), granted to the demo application; None without the approved demo model."""
    model = BaseModel.objects.filter(name=model_name, status=EntryStatus.APPROVED).first()
    if model is None:
        return None
    adapter = Adapter.objects.filter(
        name=adapter_name, base_model=model, status=EntryStatus.APPROVED
    ).first()
    embedder = BaseModel.objects.filter(name=embedding, status=EntryStatus.APPROVED).first()
    with transaction.atomic():
        task_classes_install(actor=actor)
        definition = demo_definition(model, adapter, embedder)
        route = Route.objects.filter(name=ROUTE).first()
        if route is None:
            route = services.route_create(actor=actor, definition=definition)
        elif route.embedding_model_id is None and embedder is not None:
            route = services.route_update(actor=actor, route=route, definition=definition)
        if not Grant.objects.filter(application=application, route=route).exists():
            access.grant_create(actor=actor, application=application, route=route)
    return route
