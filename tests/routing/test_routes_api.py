"""Task classes and routes through the API: a route is saved whole, refused whole (with the field
and the reason, leaving nothing behind), versioned on every change and audited once per change;
everyone reads routes, only admins and operators change them; a route is granted like a model."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.access import services as access
from appliance.access.models import Application, Grant
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry import services as registry
from appliance.registry.models import Adapter, BaseModel
from appliance.routing import services
from appliance.routing.models import Route, RouteRule, RouteTier, TaskClass
from tests.access.conftest import approve, import_adapter, import_model
from tests.conftest import actor
from tests.fleet.conftest import BERT
from tests.support import write_model_dir

pytestmark = pytest.mark.django_db

MISSING = 999_999
ERROR_KEYS = {"code", "detail", "fields", "request_id"}


# --- registry entries and task classes -----------------------------------------------------------


@dataclass
class Entries:
    """What a route's tiers may (or may not) name."""

    chat: BaseModel  # approved LlamaForCausalLM
    triage: Adapter  # approved adapter of ``chat``
    billing: Adapter  # approved adapter of ``chat``
    other: BaseModel  # another approved text model
    other_lora: Adapter  # an approved adapter of ``other``
    pending: BaseModel  # imported, not approved
    encoder: BaseModel  # approved BertModel: embeddings only


@pytest.fixture
def entries(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> Entries:
    """Imported by bob, approved by alice (four eyes)."""
    capture = django_capture_on_commit_callbacks
    chat = approve(admin, import_model(admin2, "base-model", import_root, capture))
    triage, billing = (
        approve(admin, import_adapter(admin2, name, chat, import_root, capture))
        for name in ("triage", "billing")
    )
    other = approve(admin, import_model(admin2, "other-base", import_root, capture))
    other_lora = approve(admin, import_adapter(admin2, "other-lora", other, import_root, capture))
    pending = import_model(admin2, "pending-model", import_root, capture)
    with capture(execute=True):
        encoder, _ = registry.model_import(
            actor=actor(admin2),
            name="minilm",
            path=str(write_model_dir(import_root / "minilm", BERT)),
        )
    encoder.refresh_from_db()
    approve(admin, encoder)
    assert chat.generates and not encoder.generates
    return Entries(chat, triage, billing, other, other_lora, pending, encoder)


@pytest.fixture
def classes(admin: User) -> dict[str, TaskClass]:
    """general (the default), code and summarise; only code has example prompts."""
    return {
        name: services.task_class_create(actor=actor(admin), name=name, examples=examples)
        for name, examples in (
            ("general", []),
            ("code", ["Fix this Python function.", "Write a SQL query for the totals."]),
            ("summarise", []),
        )
    }


# --- helpers -------------------------------------------------------------------------------------


def routing_state() -> dict[str, Any]:
    """Every task class, route, rule, tier and grant as stored, and the audit actions so far.
    Denials are audited and api_as() audits the token it makes, so those are not counted."""
    return {
        "counts": {
            "task_classes": TaskClass.objects.count(),
            "routes": Route.objects.count(),
            "rules": RouteRule.objects.count(),
            "tiers": RouteTier.objects.count(),
            "grants": Grant.objects.count(),
        },
        "task_classes": list(TaskClass.objects.order_by("pk").values()),
        "routes": list(Route.objects.order_by("pk").values()),
        "rules": list(RouteRule.objects.order_by("pk").values()),
        "tiers": list(RouteTier.objects.order_by("pk").values()),
        "grants": list(Grant.objects.order_by("pk").values()),
        "audit": audit_actions(),
    }


def audit_actions() -> Counter[str]:
    return Counter(
        AuditEvent.objects.exclude(action__in=["permission.denied", "token.create"]).values_list(
            "action", flat=True
        )
    )


def new_actions(before: Counter[str]) -> Counter[str]:
    return audit_actions() - before


def assert_refused(
    response: Any,
    status: int,
    code: str,
    before: dict[str, Any],
    field: str | None = None,
    reason: str | None = None,
) -> None:
    """The answer is the API's error body with this status and code (and, where given, the field
    and a reason naming the problem), and nothing in routing, grants or audit changed."""
    assert response.status_code == status, response.data
    assert set(response.data) == ERROR_KEYS, response.data
    assert response.data["code"] == code, response.data
    if field is not None:
        assert field in response.data["fields"], response.data
        if reason is not None:
            assert any(reason in problem for problem in response.data["fields"][field]), (
                response.data
            )
    elif reason is not None:
        assert reason in response.data["detail"], response.data
    assert routing_state() == before


def tier(task_class: str, **target: Any) -> dict[str, Any]:
    return {"task_class": task_class, **target}


def rule(kind: str, task_class: str, value: str = "") -> dict[str, Any]:
    return {"kind": kind, "value": value, "task_class": task_class}


def route_body(
    name: str, chat: BaseModel, *, default_class: str = "general", **fields: Any
) -> dict[str, Any]:
    """A valid route: the default class answered by ``chat``, unless tiers are given."""
    return {
        "name": name,
        "default_class": default_class,
        "rules": fields.pop("rules", []),
        "tiers": fields.pop("tiers", [tier(default_class, model_id=chat.pk)]),
        **fields,
    }


def create_route(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/routes", body)
    assert response.status_code == 201, response.data
    return response.data  # type: ignore[no-any-return]


def stored_rules(route_id: int) -> list[tuple[int, str, str, str]]:
    return [
        (r.position, r.kind, r.value, r.task_class.name)
        for r in RouteRule.objects.filter(route_id=route_id).order_by("position")
    ]


def stored_tiers(route_id: int) -> list[tuple[str, int, str | None, str | None, str | None]]:
    return [
        (
            t.task_class.name,
            t.position,
            t.model.name if t.model else None,
            t.adapter.name if t.adapter else None,
            t.fallback_route.name if t.fallback_route else None,
        )
        for t in RouteTier.objects.filter(route_id=route_id).order_by(
            "task_class__name", "position"
        )
    ]


# --- task classes --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_creates_a_task_class_with_one_audit_event(
    request: pytest.FixtureRequest, api_as: Any, role: str
) -> None:
    manager = request.getfixturevalue(role)
    before = audit_actions()
    response = api_as(manager).post(
        "/task-classes",
        {
            "name": "extraction",
            "description": "Pull fields out of letters.",
            "examples": ["  Extract the discharge date.  ", "List the medications."],
        },
    )

    assert response.status_code == 201, response.data
    stored = TaskClass.objects.get(name="extraction")
    assert response.data["id"] == stored.pk
    assert stored.examples == ["Extract the discharge date.", "List the medications."]
    assert stored.description == "Pull fields out of letters."
    assert new_actions(before) == Counter({"task_class.create": 1})
    event = AuditEvent.objects.get(action="task_class.create")
    assert (event.object_type, event.object_id) == ("task_class", str(stored.pk))
    assert event.details == {"name": "extraction", "examples": 2}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"name": "Has Spaces"}, 422, "validation_error", "name"),
        ({"name": "-leading-dash"}, 422, "validation_error", "name"),
        ({"name": "ok", "examples": ["   "]}, 422, "invalid_examples", "examples"),
        ({"name": "ok", "examples": ["x" * 501]}, 422, "invalid_examples", "examples"),
        ({"name": "ok", "examples": ["e"] * 51}, 422, "invalid_examples", "examples"),
        ({"name": "general"}, 409, "duplicate_name", None),
    ],
    ids=["spaces", "leading-dash", "blank-example", "long-example", "51-examples", "duplicate"],
)
def test_a_task_class_that_cannot_be_used_is_refused_and_nothing_is_written(
    api_as: Any,
    admin: User,
    classes: dict[str, TaskClass],
    body: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    before = routing_state()
    response = api_as(admin).post("/task-classes", body)
    assert_refused(response, status, code, before, field=field)


def test_patch_changes_description_and_examples_and_raises_the_routes_versions(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    route = create_route(client, route_body("assistant", entries.chat))
    before = audit_actions()

    response = client.patch(
        f"/task-classes/{classes['general'].pk}",
        {"description": "Anything else.", "examples": [" Hello there "]},
    )

    assert response.status_code == 200, response.data
    assert (response.data["description"], response.data["examples"]) == (
        "Anything else.",
        ["Hello there"],
    )
    classes["general"].refresh_from_db()
    assert classes["general"].examples == ["Hello there"]
    assert Route.objects.get(pk=route["id"]).version == 2  # examples are compiled into plans
    assert new_actions(before) == Counter({"task_class.update": 1})
    event = AuditEvent.objects.get(action="task_class.update")
    assert event.details == {"name": "general", "examples": 1}


def test_patch_sends_only_what_changes_and_cannot_rename(
    api_as: Any, admin: User, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    code = classes["code"]
    response = client.patch(f"/task-classes/{code.pk}", {"description": "Source code."})
    assert response.status_code == 200, response.data
    code.refresh_from_db()
    assert code.examples == ["Fix this Python function.", "Write a SQL query for the totals."]

    before = routing_state()
    assert_refused(
        client.patch(f"/task-classes/{code.pk}", {"name": "renamed"}),
        422,
        "validation_error",
        before,
        field="name",
    )
    assert_refused(
        client.patch(f"/task-classes/{code.pk}", {"examples": [""]}),
        422,
        "invalid_examples",
        before,
        field="examples",
    )
    assert_refused(
        client.patch(f"/task-classes/{MISSING}", {"description": "x"}), 404, "not_found", before
    )


def test_an_unused_task_class_is_deleted_with_one_audit_event(
    api_as: Any, admin: User, classes: dict[str, TaskClass]
) -> None:
    summarise = classes["summarise"]
    before = audit_actions()

    response = api_as(admin).call("delete", f"/task-classes/{summarise.pk}")

    assert response.status_code == 204, response.data
    assert not TaskClass.objects.filter(pk=summarise.pk).exists()
    assert new_actions(before) == Counter({"task_class.delete": 1})
    event = AuditEvent.objects.get(action="task_class.delete")
    assert (event.object_id, event.details) == (str(summarise.pk), {"name": "summarise"})


@pytest.mark.parametrize("use", ["default_class", "rule", "tier"])
def test_a_task_class_a_route_uses_cannot_be_deleted(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass], use: str
) -> None:
    client = api_as(admin)
    chat = entries.chat
    body = {
        "default_class": route_body("assistant", chat, default_class="summarise"),
        "rule": route_body("assistant", chat, rules=[rule("has_code", "summarise")]),
        "tier": route_body(
            "assistant",
            chat,
            tiers=[tier("general", model_id=chat.pk), tier("summarise", model_id=chat.pk)],
        ),
    }[use]
    create_route(client, body)
    before = routing_state()

    response = client.call("delete", f"/task-classes/{classes['summarise'].pk}")

    assert_refused(response, 409, "task_class_in_use", before, reason="assistant")


def test_everyone_reads_task_classes(
    api_as: Any,
    auditor: User,
    app_owner: User,
    operator: User,
    classes: dict[str, TaskClass],
) -> None:
    for user in (auditor, app_owner, operator):
        client = api_as(user)
        listed = client.get("/task-classes")
        assert listed.status_code == 200, listed.data
        assert [c["name"] for c in listed.data["items"]] == ["code", "general", "summarise"]
        one = client.get(f"/task-classes/{classes['code'].pk}")
        assert one.status_code == 200, one.data
        assert one.data["examples"] == [
            "Fix this Python function.",
            "Write a SQL query for the totals.",
        ]
    assert api_as(auditor).get(f"/task-classes/{MISSING}").status_code == 404


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_auditor_and_app_owner_may_not_change_task_classes(
    request: pytest.FixtureRequest, api_as: Any, classes: dict[str, TaskClass], role: str
) -> None:
    client = api_as(request.getfixturevalue(role))
    general = classes["general"]
    before = routing_state()
    for response in (
        client.post("/task-classes", {"name": "extraction"}),
        client.patch(f"/task-classes/{general.pk}", {"description": "mine now"}),
        client.call("delete", f"/task-classes/{classes['summarise'].pk}"),
    ):
        assert_refused(response, 403, "permission_denied", before)


# --- routes: success ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_route_is_created_with_rules_in_order_and_tiers_per_class(
    request: pytest.FixtureRequest,
    api_as: Any,
    role: str,
    entries: Entries,
    classes: dict[str, TaskClass],
) -> None:
    manager = request.getfixturevalue(role)
    client = api_as(manager)
    before = audit_actions()
    chat, triage = entries.chat, entries.triage
    body = route_body(
        "assistant",
        chat,
        description="Cheap first, big when needed.",
        rules=[
            rule("keyword", "summarise", "summar, tl;dr"),
            rule("regex", "code", r"\bSELECT\b.+\bFROM\b"),
            rule("has_code", "code"),
            rule("min_chars", "summarise", "4000"),
            rule("json_schema", "general"),
        ],
        tiers=[
            tier("code", model_id=chat.pk, adapter_id=triage.pk, timeout_ms=2000),
            tier("general", model_id=chat.pk, adapter_id=triage.pk),
            tier("code", model_id=entries.other.pk),
            tier("general", model_id=chat.pk),
            tier("summarise", model_id=chat.pk, adapter_id=entries.billing.pk),
            tier("general", model_id=entries.other.pk, adapter_id=entries.other_lora.pk),
        ],
        cost_ceiling="12.5",
    )

    response = client.post("/routes", body)

    assert response.status_code == 201, response.data
    route = Route.objects.get(name="assistant")
    assert (route.pk, route.version, route.created_by) == (response.data["id"], 1, manager)
    assert (route.default_class.name, route.description) == (
        "general",
        "Cheap first, big when needed.",
    )
    assert str(route.cost_ceiling) == "12.5000"
    assert stored_rules(route.pk) == [
        (1, "keyword", "summar, tl;dr", "summarise"),
        (2, "regex", r"\bSELECT\b.+\bFROM\b", "code"),
        (3, "has_code", "", "code"),
        (4, "min_chars", "4000", "summarise"),
        (5, "json_schema", "", "general"),
    ]
    assert stored_tiers(route.pk) == [
        ("code", 0, "base-model", "triage", None),
        ("code", 1, "other-base", None, None),
        ("general", 0, "base-model", "triage", None),
        ("general", 1, "base-model", None, None),
        ("general", 2, "other-base", "other-lora", None),
        ("summarise", 0, "base-model", "billing", None),
    ]
    assert RouteTier.objects.get(route=route, task_class__name="code", position=0).timeout_ms == (
        2000
    )
    # The answer shows what was stored, in the same order.
    assert [(r["position"], r["kind"], r["task_class"]) for r in response.data["rules"]] == [
        (p, k, c) for p, k, _, c in stored_rules(route.pk)
    ]
    assert [
        (t["task_class"], t["position"], t["model_name"], t["adapter_name"], t["route_name"])
        for t in response.data["tiers"]
    ] == stored_tiers(route.pk)
    assert (response.data["version"], response.data["default_class"]) == (1, "general")
    assert new_actions(before) == Counter({"route.create": 1})
    event = AuditEvent.objects.get(action="route.create")
    assert (event.object_type, event.object_id) == ("route", str(route.pk))
    assert event.details["name"] == "assistant"
    assert event.details["version"] == 1
    assert len(event.details["rules"]) == 5 and len(event.details["tiers"]) == 6


def test_get_answers_the_stored_route_to_everyone(
    api_as: Any,
    admin: User,
    auditor: User,
    app_owner: User,
    entries: Entries,
    classes: dict[str, TaskClass],
) -> None:
    created = create_route(
        api_as(admin),
        route_body("assistant", entries.chat, rules=[rule("keyword", "code", "python")]),
    )
    for user in (auditor, app_owner):
        client = api_as(user)
        one = client.get(f"/routes/{created['id']}")
        assert one.status_code == 200, one.data
        assert one.data == created
        listed = client.get("/routes")
        assert listed.status_code == 200, listed.data
        assert [r["name"] for r in listed.data["items"]] == ["assistant"]
    assert api_as(auditor).get(f"/routes/{MISSING}").status_code == 404


def test_put_replaces_the_whole_definition_raises_the_version_and_is_audited_once(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    chat = entries.chat
    created = create_route(
        client,
        route_body(
            "assistant",
            chat,
            rules=[rule("keyword", "code", "python"), rule("has_code", "code")],
            tiers=[tier("general", model_id=chat.pk), tier("code", model_id=chat.pk)],
        ),
    )
    before = audit_actions()

    response = client.call(
        "put",
        f"/routes/{created['id']}",
        route_body(
            "assistant-v2",
            chat,
            default_class="summarise",
            status="disabled",
            rules=[rule("max_chars", "general", "200"), rule("regex", "code", "^def ")],
            tiers=[
                tier("summarise", model_id=entries.other.pk),
                tier("general", model_id=chat.pk, adapter_id=entries.billing.pk),
                tier("summarise", model_id=chat.pk),
            ],
        ),
    )

    assert response.status_code == 200, response.data
    route = Route.objects.get(pk=created["id"])
    assert (route.name, route.status, route.version, route.default_class.name) == (
        "assistant-v2",
        "disabled",
        2,
        "summarise",
    )
    assert response.data["version"] == 2
    assert stored_rules(route.pk) == [
        (1, "max_chars", "200", "general"),
        (2, "regex", "^def ", "code"),
    ]
    assert stored_tiers(route.pk) == [
        ("general", 0, "base-model", "billing", None),
        ("summarise", 0, "other-base", None, None),
        ("summarise", 1, "base-model", None, None),
    ]
    assert RouteRule.objects.count() == 2 and RouteTier.objects.count() == 3  # old ones gone
    assert new_actions(before) == Counter({"route.update": 1})
    event = AuditEvent.objects.get(action="route.update")
    assert (event.object_id, event.details["version"], event.details["name"]) == (
        str(route.pk),
        2,
        "assistant-v2",
    )

    again = client.call("put", f"/routes/{created['id']}", route_body("assistant-v2", chat))
    assert again.status_code == 200, again.data
    assert again.data["version"] == 3
    assert new_actions(before) == Counter({"route.update": 2})


def test_delete_removes_the_route_with_its_rules_and_tiers(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    created = create_route(
        client, route_body("assistant", entries.chat, rules=[rule("has_code", "code")])
    )
    before = audit_actions()

    response = client.call("delete", f"/routes/{created['id']}")

    assert response.status_code == 204, response.data
    assert (Route.objects.count(), RouteRule.objects.count(), RouteTier.objects.count()) == (
        0,
        0,
        0,
    )
    assert new_actions(before) == Counter({"route.delete": 1})
    event = AuditEvent.objects.get(action="route.delete")
    assert event.details == {"name": "assistant", "version": 1}
    assert client.get(f"/routes/{created['id']}").status_code == 404


def test_a_route_escalates_to_another_route_and_the_escalated_one_cannot_be_deleted(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    big = create_route(client, route_body("big", entries.other))
    small = create_route(
        client,
        route_body(
            "small",
            entries.chat,
            tiers=[
                tier("general", model_id=entries.chat.pk, timeout_ms=500),
                tier("general", route_id=big["id"]),
            ],
        ),
    )
    assert stored_tiers(small["id"]) == [
        ("general", 0, "base-model", None, None),
        ("general", 1, None, None, "big"),
    ]
    assert small["tiers"][1]["route_id"] == big["id"]
    assert small["tiers"][1]["route_name"] == "big"

    before = routing_state()
    assert_refused(
        client.call("delete", f"/routes/{big['id']}"), 409, "route_in_use", before, reason="small"
    )


def test_a_semantic_classifier_uses_an_embedding_model_and_example_prompts(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    created = create_route(
        api_as(admin),
        route_body(
            "assistant",
            entries.chat,
            tiers=[
                tier("general", model_id=entries.chat.pk),
                tier("code", model_id=entries.chat.pk),
            ],
            embedding_model_id=entries.encoder.pk,
            semantic_threshold=0.5,
        ),
    )
    assert (created["embedding_model_id"], created["embedding_model_name"]) == (
        entries.encoder.pk,
        "minilm",
    )
    assert created["semantic_threshold"] == 0.5


# --- routes: refusals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A route body (built from the entries and an existing route ``fallback``) and how it is
    refused."""

    body: Any
    status: int
    code: str
    field: str | None
    reason: str


REFUSALS = {
    "unknown-default-class": Refusal(
        lambda e, f: route_body("r", e.chat, default_class="nope", tiers=[]),
        422,
        "unknown_task_class",
        "task_class",
        "nope: no such task class",
    ),
    "unknown-class-in-a-rule": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("has_code", "coding")]),
        422,
        "unknown_task_class",
        "task_class",
        "coding: no such task class",
    ),
    "unknown-class-in-a-tier": Refusal(
        lambda e, f: route_body(
            "r",
            e.chat,
            tiers=[tier("general", model_id=e.chat.pk), tier("maths", model_id=e.chat.pk)],
        ),
        422,
        "unknown_task_class",
        "task_class",
        "maths: no such task class",
    ),
    "regex-does-not-compile": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("regex", "code", "(unclosed")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: the pattern does not compile",
    ),
    "empty-regex": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("regex", "code", "")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: a regex rule needs a pattern",
    ),
    "keyword-without-words": Refusal(
        lambda e, f: route_body(
            "r", e.chat, rules=[rule("has_code", "code"), rule("keyword", "code", " , ,")]
        ),
        422,
        "invalid_rules",
        "rules",
        "rules[1]: a keyword rule needs at least one word",
    ),
    "length-not-a-number": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("min_chars", "summarise", "ten")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: a length rule needs a whole number",
    ),
    "negative-length": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("max_chars", "summarise", "-5")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: a length rule needs a whole number",
    ),
    "value-on-a-valueless-rule": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("has_code", "code", "python")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: a has_code rule takes no value",
    ),
    "negative-timeout-on-a-route-tier": Refusal(
        lambda e, f: route_body(
            "r",
            e.chat,
            tiers=[
                tier("general", route_id=f.pk, timeout_ms=-1),
                tier("general", model_id=e.chat.pk),
            ],
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: timeout_ms from 1 to 3600000",
    ),
    "zero-timeout-on-a-model-tier": Refusal(
        lambda e, f: route_body(
            "r", e.chat, tiers=[tier("general", model_id=e.chat.pk, timeout_ms=0)]
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: timeout_ms from 1 to 3600000",
    ),
    "unknown-rule-kind": Refusal(
        lambda e, f: route_body("r", e.chat, rules=[rule("sentiment", "code")]),
        422,
        "invalid_rules",
        "rules",
        "rules[0]: kind must be one of",
    ),
    "tier-names-model-and-route": Refusal(
        lambda e, f: route_body(
            "r", e.chat, tiers=[tier("general", model_id=e.chat.pk, route_id=f.pk)]
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: name either a model (with an adapter or not) or a route",
    ),
    "tier-names-nothing": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("general")]),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: name either a model",
    ),
    "adapter-with-a-route": Refusal(
        lambda e, f: route_body(
            "r", e.chat, tiers=[tier("general", route_id=f.pk, adapter_id=e.triage.pk)]
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: an adapter goes with a model, not a route",
    ),
    "unknown-fallback-route": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("general", route_id=MISSING)]),
        422,
        "invalid_tiers",
        "tiers",
        f"tiers[0]: route {MISSING} does not exist",
    ),
    "unknown-model": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("general", model_id=MISSING)]),
        422,
        "invalid_tiers",
        "tiers",
        f"tiers[0]: model {MISSING} does not exist",
    ),
    "unapproved-model": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("general", model_id=e.pending.pk)]),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: pending-model is pending, not approved",
    ),
    "adapter-of-another-model": Refusal(
        lambda e, f: route_body(
            "r", e.chat, tiers=[tier("general", model_id=e.chat.pk, adapter_id=e.other_lora.pk)]
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: other-lora is not an adapter of base-model",
    ),
    "embedding-model-as-a-chat-tier": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("general", model_id=e.encoder.pk)]),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: minilm is an embedding model; it cannot answer chats",
    ),
    "timeout-out-of-range": Refusal(
        lambda e, f: route_body(
            "r", e.chat, tiers=[tier("general", model_id=e.chat.pk, timeout_ms=0)]
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[0]: timeout_ms from 1 to 3600000",
    ),
    "default-class-without-tiers": Refusal(
        lambda e, f: route_body("r", e.chat, tiers=[tier("code", model_id=e.chat.pk)]),
        422,
        "invalid_tiers",
        "tiers",
        "the default class general needs at least one tier",
    ),
    "duplicate-tier-in-a-chain": Refusal(
        lambda e, f: route_body(
            "r",
            e.chat,
            tiers=[
                tier("general", model_id=e.chat.pk, adapter_id=e.triage.pk),
                tier("general", model_id=e.chat.pk),
                tier("general", model_id=e.chat.pk, adapter_id=e.triage.pk),
            ],
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[2]: already in the general chain",
    ),
    "duplicate-route-tier-in-a-chain": Refusal(
        lambda e, f: route_body(
            "r",
            e.chat,
            tiers=[tier("general", route_id=f.pk), tier("general", route_id=f.pk)],
        ),
        422,
        "invalid_tiers",
        "tiers",
        "tiers[1]: already in the general chain",
    ),
    "embedding-model-that-generates-text": Refusal(
        lambda e, f: route_body("r", e.chat, embedding_model_id=e.chat.pk),
        422,
        "invalid_embedding_model",
        "embedding_model_id",
        "base-model generates text; choose an embedding model",
    ),
    "semantic-classifier-without-examples": Refusal(
        lambda e, f: route_body("r", e.chat, embedding_model_id=e.encoder.pk),
        422,
        "invalid_embedding_model",
        "embedding_model_id",
        "none of the route's task classes has example prompts",
    ),
    "unknown-embedding-model": Refusal(
        lambda e, f: route_body("r", e.chat, embedding_model_id=MISSING),
        422,
        "validation_error",
        "embedding_model_id",
        "Does not exist.",
    ),
    "threshold-out-of-range": Refusal(
        lambda e, f: route_body("r", e.chat, semantic_threshold=1.5),
        422,
        "validation_error",
        "semantic_threshold",
        "From -1 to 1.",
    ),
    "unknown-status": Refusal(
        lambda e, f: route_body("r", e.chat, status="paused"),
        422,
        "validation_error",
        "status",
        "One of active, disabled.",
    ),
    "negative-cost-ceiling": Refusal(
        lambda e, f: route_body("r", e.chat, cost_ceiling="-1"),
        422,
        "validation_error",
        "cost_ceiling",
        "",
    ),
    "bad-name": Refusal(
        lambda e, f: route_body("Not A Name", e.chat),
        422,
        "validation_error",
        "name",
        "Lower-case letters",
    ),
    "unknown-field": Refusal(
        lambda e, f: route_body("r", e.chat, owner_id=1),
        422,
        "validation_error",
        "owner_id",
        "",
    ),
    "name-of-a-model": Refusal(
        lambda e, f: route_body("base-model", e.chat), 409, "duplicate_name", None, "base-model"
    ),
    "name-of-an-adapter": Refusal(
        lambda e, f: route_body("triage", e.chat), 409, "duplicate_name", None, "triage"
    ),
    "name-of-another-route": Refusal(
        lambda e, f: route_body("fallback", e.chat), 409, "duplicate_name", None, "fallback"
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_a_route_that_cannot_be_used_is_refused_whole_and_nothing_is_written(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass], case: str
) -> None:
    refusal = REFUSALS[case]
    client = api_as(admin)
    fallback = Route.objects.get(
        pk=create_route(client, route_body("fallback", entries.other))["id"]
    )
    body = refusal.body(entries, fallback)
    before = routing_state()

    response = client.post("/routes", body)

    assert_refused(
        response,
        refusal.status,
        refusal.code,
        before,
        field=refusal.field,
        reason=refusal.reason or None,
    )


def test_every_problem_of_a_route_is_reported_at_once(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    before = routing_state()
    response = api_as(admin).post(
        "/routes",
        route_body(
            "r",
            entries.chat,
            tiers=[
                tier("general", model_id=entries.pending.pk),
                tier("general", model_id=entries.encoder.pk),
                tier("code", model_id=entries.chat.pk, adapter_id=entries.other_lora.pk),
            ],
        ),
    )
    assert_refused(response, 422, "invalid_tiers", before, field="tiers")
    problems = response.data["fields"]["tiers"]
    assert [p.split(":")[0] for p in problems] == ["tiers[0]", "tiers[1]", "tiers[2]"]


def test_a_fallback_cycle_is_refused_and_the_route_stays_as_it_was(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    a = create_route(client, route_body("route-a", entries.chat))
    create_route(
        client, route_body("route-b", entries.other, tiers=[tier("general", route_id=a["id"])])
    )
    before = routing_state()

    response = client.call(
        "put",
        f"/routes/{a['id']}",
        route_body(
            "route-a",
            entries.chat,
            tiers=[
                tier("general", model_id=entries.chat.pk),
                tier("general", route_id=Route.objects.get(name="route-b").pk),
            ],
        ),
    )

    assert_refused(
        response,
        422,
        "fallback_cycle",
        before,
        field="tiers",
        reason="cycle: route-a → route-b → route-a",
    )
    assert Route.objects.get(pk=a["id"]).version == 1


def test_a_longer_fallback_cycle_is_refused_but_a_diamond_is_not(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    a = create_route(client, route_body("route-a", entries.chat))
    b = create_route(
        client, route_body("route-b", entries.chat, tiers=[tier("general", route_id=a["id"])])
    )
    c = create_route(
        client,
        route_body(
            "route-c",
            entries.chat,
            tiers=[tier("general", route_id=a["id"]), tier("code", route_id=b["id"])],
        ),
    )  # c → a, c → b → a: two ways to a, no loop
    before = routing_state()

    response = client.call(
        "put",
        f"/routes/{a['id']}",
        route_body(
            "route-a",
            entries.chat,
            tiers=[tier("general", model_id=entries.chat.pk), tier("code", route_id=c["id"])],
        ),
    )

    assert_refused(response, 422, "fallback_cycle", before, field="tiers", reason="route-a →")


def test_a_route_cannot_fall_back_to_itself(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    a = create_route(client, route_body("route-a", entries.chat))
    before = routing_state()

    response = client.call(
        "put",
        f"/routes/{a['id']}",
        route_body(
            "route-a",
            entries.chat,
            tiers=[tier("general", model_id=entries.chat.pk), tier("general", route_id=a["id"])],
        ),
    )

    assert_refused(
        response,
        422,
        "invalid_tiers",
        before,
        field="tiers",
        reason="tiers[1]: a route cannot fall back to itself",
    )


def test_put_refusals_leave_the_route_as_it_was(
    api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]
) -> None:
    client = api_as(admin)
    a = create_route(client, route_body("route-a", entries.chat, rules=[rule("has_code", "code")]))
    create_route(client, route_body("route-b", entries.chat))
    path = f"/routes/{a['id']}"
    before = routing_state()

    assert_refused(
        client.call("put", path, route_body("route-b", entries.chat)),
        409,
        "duplicate_name",
        before,
        reason="route-b",
    )
    assert_refused(
        client.call(
            "put", path, route_body("route-a", entries.chat, rules=[rule("regex", "code", "[")])
        ),
        422,
        "invalid_rules",
        before,
        field="rules",
    )
    assert_refused(
        client.call(
            "put",
            path,
            route_body(
                "route-a", entries.chat, tiers=[tier("general", model_id=entries.pending.pk)]
            ),
        ),
        422,
        "invalid_tiers",
        before,
        field="tiers",
    )
    assert_refused(
        client.call("put", f"/routes/{MISSING}", route_body("route-a", entries.chat)),
        404,
        "not_found",
        before,
    )


# --- who may change routes -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_auditor_and_app_owner_read_routes_but_may_not_change_them(
    request: pytest.FixtureRequest,
    api_as: Any,
    admin: User,
    entries: Entries,
    classes: dict[str, TaskClass],
    role: str,
) -> None:
    created = create_route(api_as(admin), route_body("assistant", entries.chat))
    client = api_as(request.getfixturevalue(role))
    assert client.get("/routes").status_code == 200
    assert client.get(f"/routes/{created['id']}").status_code == 200
    before = routing_state()
    for response in (
        client.post("/routes", route_body("mine", entries.chat)),
        client.call("put", f"/routes/{created['id']}", route_body("assistant", entries.other)),
        client.call("delete", f"/routes/{created['id']}"),
    ):
        assert_refused(response, 403, "permission_denied", before)


# --- routes granted to applications --------------------------------------------------------------


@pytest.fixture
def owens_app(admin: User, app_owner: User) -> Application:
    return access.application_create(
        actor=actor(admin), name="discharge-letters", owner=app_owner, department="cardiology"
    )


@pytest.fixture
def route(api_as: Any, admin: User, entries: Entries, classes: dict[str, TaskClass]) -> Route:
    created = create_route(api_as(admin), route_body("assistant", entries.chat))
    return Route.objects.get(pk=created["id"])


def grants_path(application: Application) -> str:
    return f"/applications/{application.pk}/grants"


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_a_route_is_granted_to_an_application_like_a_model(
    request: pytest.FixtureRequest,
    api_as: Any,
    owens_app: Application,
    route: Route,
    app_owner: User,
    role: str,
) -> None:
    manager = request.getfixturevalue(role)
    policy_before = owens_app.policy_version
    before = audit_actions()

    response = api_as(manager).post(grants_path(owens_app), {"route_id": route.pk})

    assert response.status_code == 201, response.data
    assert (response.data["route_id"], response.data["route_name"]) == (route.pk, "assistant")
    assert (response.data["model_id"], response.data["adapter_id"]) == (None, None)
    grant = Grant.objects.get(pk=response.data["id"])
    assert (grant.application, grant.route, grant.model, grant.adapter, grant.created_by) == (
        owens_app,
        route,
        None,
        None,
        manager,
    )
    owens_app.refresh_from_db()
    assert owens_app.policy_version == policy_before + 1
    assert new_actions(before) == Counter({"grant.create": 1})
    assert AuditEvent.objects.get(action="grant.create").details == {
        "application": "discharge-letters",
        "model": None,
        "adapter": None,
        "route": "assistant",
    }
    listed = api_as(app_owner).get(grants_path(owens_app))
    assert [(g["route_id"], g["route_name"]) for g in listed.data["items"]] == [
        (route.pk, "assistant")
    ]


def test_a_route_and_a_model_in_one_grant_are_refused(
    api_as: Any, admin: User, owens_app: Application, route: Route, entries: Entries
) -> None:
    client = api_as(admin)
    before = routing_state()
    for body in (
        {"model_id": entries.chat.pk, "route_id": route.pk},
        {"route_id": route.pk, "adapter_id": entries.triage.pk},
        {},
    ):
        response = client.post(grants_path(owens_app), body)
        assert_refused(response, 422, "validation_error", before)
    both = client.post(grants_path(owens_app), {"model_id": entries.chat.pk, "route_id": route.pk})
    assert set(both.data["fields"]) == {"model_id", "route_id"}
    assert_refused(
        client.post(grants_path(owens_app), {"route_id": MISSING}), 404, "not_found", before
    )


def test_a_route_granted_twice_is_a_conflict(
    api_as: Any, admin: User, owens_app: Application, route: Route
) -> None:
    client = api_as(admin)
    assert client.post(grants_path(owens_app), {"route_id": route.pk}).status_code == 201
    before = routing_state()
    assert_refused(
        client.post(grants_path(owens_app), {"route_id": route.pk}),
        409,
        "duplicate_grant",
        before,
    )


def test_two_routes_and_a_model_may_be_granted_to_one_application(
    api_as: Any, admin: User, owens_app: Application, route: Route, entries: Entries
) -> None:
    client = api_as(admin)
    second = create_route(client, route_body("second", entries.other))
    for body in ({"route_id": route.pk}, {"route_id": second["id"]}, {"model_id": entries.chat.pk}):
        response = client.post(grants_path(owens_app), body)
        assert response.status_code == 201, response.data
    assert owens_app.grants.count() == 3


def test_the_owner_may_not_grant_a_route(
    api_as: Any, app_owner: User, owens_app: Application, route: Route
) -> None:
    before = routing_state()
    response = api_as(app_owner).post(grants_path(owens_app), {"route_id": route.pk})
    assert_refused(response, 403, "permission_denied", before)


def test_a_granted_route_cannot_be_deleted_until_the_grant_is_withdrawn(
    api_as: Any, admin: User, owens_app: Application, route: Route
) -> None:
    client = api_as(admin)
    grant = client.post(grants_path(owens_app), {"route_id": route.pk}).data
    before = routing_state()

    assert_refused(
        client.call("delete", f"/routes/{route.pk}"),
        409,
        "route_in_use",
        before,
        reason="discharge-letters",
    )

    withdrawn = client.call("delete", f"{grants_path(owens_app)}/{grant['id']}")
    assert withdrawn.status_code == 204, withdrawn.data
    assert AuditEvent.objects.get(action="grant.delete").details["route"] == "assistant"
    assert client.call("delete", f"/routes/{route.pk}").status_code == 204
    assert not Route.objects.filter(pk=route.pk).exists()
