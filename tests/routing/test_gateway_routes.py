"""Requests through a route, over the real gateway and fake engines: the hint, the rules in
order, the semantic classifier, fallback on error, timeout and no engine, the cost ceiling, the
decision headers, and the decision on the usage record and audit event (never the prompt)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from appliance.audit.models import AuditEvent
from appliance.fleet.models import Deployment
from appliance.gateway.models import UsageRecord
from appliance.registry.choices import EntryStatus
from appliance.registry.models import BaseModel
from appliance.routing import costs
from appliance.routing.choices import CostKind, RuleKind
from tests.conftest import actor
from tests.gateway.test_errors import assert_error

SUMMARY = "Please summarise the ward round notes in two lines."
ROUTE_HEADERS = ("x-appliance-route-target", "x-appliance-task-class")


def ask(gateway: Any, key: str, text: str, **options: Any) -> httpx.Response:
    body = {
        "model": options.pop("model", "assistant"),
        "messages": [{"role": "user", "content": text}],
    }
    body.update(options.pop("body", {}))
    headers = {"Authorization": f"Bearer {key}", **options.pop("headers", {})}
    return gateway.run(
        lambda: httpx.post(
            f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=20
        )
    )


def decision(response: httpx.Response) -> tuple[str | None, str | None]:
    return tuple(response.headers.get(name) for name in ROUTE_HEADERS)  # type: ignore[return-value]


@pytest.fixture
def two_tiers(
    approved_model: Any, approved_adapters: Any, serve: Any, fake_engines: Any, route: Any
) -> dict[str, Any]:
    """Route ``assistant``: summaries to the triage adapter, everything else to the base model;
    one engine serving both."""
    triage = approved_adapters[0]
    engine = fake_engines()
    serve(approved_model, [engine], adapters=[triage])
    made = route(
        tiers=[("summarisation", triage), ("general", approved_model)],
        rules=[(RuleKind.KEYWORD, "summarisation", "summar, gist")],
    )
    return {"route": made, "engine": engine, "triage": triage}


def test_a_rule_picks_the_task_class_and_the_answer_names_the_decision(
    gateway: Any, routed: Any, two_tiers: Any
) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, SUMMARY)

    assert response.status_code == 200, response.text
    assert decision(response) == ("triage", "summarisation")
    assert response.json()["model"] == "assistant"  # the name the app asked for
    assert two_tiers["engine"].requests[-1]["body"]["model"] == "triage"
    record = UsageRecord.objects.get()
    assert (record.route, record.task_class, record.route_reason, record.adapter) == (
        "assistant",
        "summarisation",
        "rule 1 keyword",
        "triage",
    )
    assert record.deployment == "base-model"
    event = AuditEvent.objects.filter(action="inference").get()
    assert event.details["route"] == "assistant"
    assert event.details["task_class"] == "summarisation"
    assert "ward round" not in str(event.details) and "ward round" not in str(record.__dict__)


def test_a_request_no_rule_decides_takes_the_default_class(
    gateway: Any, routed: Any, two_tiers: Any
) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, "What time does the clinic open?")

    assert decision(response) == ("base-model", "general")
    assert UsageRecord.objects.get().route_reason == "default"


def test_the_first_matching_rule_wins(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    triage, billing = approved_adapters
    serve(approved_model, [fake_engines()], adapters=[triage, billing])
    made = route(
        tiers=[
            ("classification", billing),
            ("summarisation", triage),
            ("general", approved_model),
        ],
        rules=[
            (RuleKind.REGEX, "classification", r"(?i)\binvoice\b"),
            (RuleKind.KEYWORD, "summarisation", "summar"),
        ],
    )
    _, key = routed(made)

    both = ask(gateway, key, "Summarise this invoice dispute.")
    second_only = ask(gateway, key, "Summarise the handover.")

    assert decision(both) == ("billing", "classification")
    assert decision(second_only) == ("triage", "summarisation")
    reasons = list(UsageRecord.objects.order_by("id").values_list("route_reason", flat=True))
    assert reasons == ["rule 1 regex", "rule 2 keyword"]


def test_the_apps_hint_wins_over_the_rules(gateway: Any, routed: Any, two_tiers: Any) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, SUMMARY, headers={"X-Appliance-Task": "general"})

    assert decision(response) == ("base-model", "general")
    assert UsageRecord.objects.get().route_reason == "hint"


def test_a_hint_the_route_does_not_know_is_refused_and_recorded(
    gateway: Any, routed: Any, two_tiers: Any
) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, SUMMARY, headers={"X-Appliance-Task": "poetry"})

    error = assert_error(response, 422, "unknown_task_class")
    assert "general" in error["message"] and "summarisation" in error["message"]
    assert two_tiers["engine"].requests == []
    assert UsageRecord.objects.get().status == 422


def test_a_route_is_listed_with_the_models_and_its_targets_stay_out_of_reach(
    gateway: Any, routed: Any, two_tiers: Any
) -> None:
    _, key = routed(two_tiers["route"])

    listed = gateway.run(
        lambda: httpx.get(f"{gateway.url}/models", headers={"Authorization": f"Bearer {key}"})
    )
    direct = ask(gateway, key, SUMMARY, model="triage")

    assert [m["id"] for m in listed.json()["data"]] == ["assistant"]
    assert_error(direct, 404, "model_not_found")


def test_a_failing_tier_gives_way_to_the_next(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    broken, healthy = fake_engines(status=500), fake_engines()
    serve(approved_model, [broken], name="small")
    serve(large_model, [healthy], name="large")
    made = route(tiers=[("general", approved_model), ("general", large_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert response.status_code == 200, response.text
    assert decision(response) == ("large-model", "general")
    assert len(broken.requests) == 1 and len(healthy.requests) == 1
    record = UsageRecord.objects.get()
    assert (record.fallbacks, record.deployment, record.status) == (1, "large", 200)
    event = AuditEvent.objects.filter(action="inference").get()
    assert event.details["fallbacks"] == ["base-model: engine_500"]


def test_a_tier_that_does_not_answer_in_its_time_gives_way(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    slow, fast = fake_engines(delay=3), fake_engines()
    serve(approved_model, [slow], name="small")
    serve(large_model, [fast], name="large")
    made = route(tiers=[("general", approved_model, 300), ("general", large_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert decision(response) == ("large-model", "general")
    record = UsageRecord.objects.get()
    assert record.fallbacks == 1 and record.latency_ms < 2500
    event = AuditEvent.objects.filter(action="inference").get()
    assert event.details["fallbacks"] == ["base-model: tier_timeout"]


def test_a_tier_without_a_ready_engine_gives_way(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    triage = approved_adapters[0]
    serve(approved_model, [fake_engines()])  # the adapter is deployed nowhere
    made = route(tiers=[("general", triage), ("general", approved_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert decision(response) == ("base-model", "general")
    event = AuditEvent.objects.filter(action="inference").get()
    assert event.details["fallbacks"] == ["triage: no_healthy_engine"]


def test_when_the_last_tier_fails_its_error_is_the_answer_with_the_decision(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    triage = approved_adapters[0]
    serve(approved_model, [fake_engines(status=503)], adapters=[triage])
    made = route(tiers=[("general", triage), ("general", approved_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert response.status_code == 503
    assert decision(response) == ("base-model", "general")
    record = UsageRecord.objects.get()
    assert (record.status, record.fallbacks, record.error_code) == (503, 1, "engine_503")


def test_a_client_error_from_the_engine_does_not_escalate(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    refusing, other = fake_engines(status=400), fake_engines()
    serve(approved_model, [refusing], name="small")
    serve(large_model, [other], name="large")
    made = route(tiers=[("general", approved_model), ("general", large_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert response.status_code == 400
    assert other.requests == []


def test_targets_above_the_cost_ceiling_are_skipped(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
    operator: Any,
) -> None:
    dear, cheap = fake_engines(), fake_engines()
    serve(approved_model, [dear], name="small")
    serve(large_model, [cheap], name="large")
    for name, price in (("small", "9.50"), ("large", "0.80")):
        costs.cost_model_set(
            actor=actor(operator),
            deployment=Deployment.objects.get(name=name),
            kind=CostKind.PER_MILLION,
            price_per_million=Decimal(price),
        )
    made = route(
        tiers=[("general", approved_model), ("general", large_model)],
        cost_ceiling=Decimal("1.00"),
    )
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert decision(response) == ("large-model", "general")
    assert dear.requests == [] and len(cheap.requests) == 1


def test_a_malformed_latency_budget_is_refused(gateway: Any, routed: Any, two_tiers: Any) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, "hello", headers={"X-Appliance-Latency-Budget-Ms": "soon"})

    assert_error(response, 422, "invalid_latency_budget")
    assert two_tiers["engine"].requests == []


def test_a_stream_through_a_route_names_the_decision(
    gateway: Any, routed: Any, two_tiers: Any
) -> None:
    _, key = routed(two_tiers["route"])

    response = ask(gateway, key, SUMMARY, body={"stream": True})

    assert response.status_code == 200
    assert decision(response) == ("triage", "summarisation")
    assert response.text.rstrip().endswith("data: [DONE]")


def _embedder(text: str) -> list[float]:
    """A toy embedding: money words point one way, clinical words another."""
    lowered = text.lower()
    money = sum(lowered.count(w) for w in ("invoice", "payment", "refund", "charge"))
    clinic = sum(lowered.count(w) for w in ("patient", "ward", "dose", "fever"))
    return [float(money), float(clinic), 0.1]


@pytest.fixture
def semantic_route(
    approved_model: Any,
    approved_adapters: Any,
    encoder: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
    task_class: Any,
) -> dict[str, Any]:
    triage, billing = approved_adapters
    embedder = fake_engines(embedder=_embedder)
    serve(encoder, [embedder], name="minilm")
    serve(approved_model, [fake_engines()], adapters=[triage, billing])
    task_class("billing", ["A refund for a duplicate card payment", "Why was I charged twice"])
    task_class("clinical", ["The patient on ward 4 has a fever", "Check the dose for this patient"])
    made = route(
        tiers=[("billing", billing), ("clinical", triage), ("general", approved_model)],
        embedding_model_id=encoder.pk,
        semantic_threshold=0.9,
    )
    return {"route": made, "embedder": embedder}


def test_the_semantic_classifier_picks_the_nearest_examples_class(
    gateway: Any, routed: Any, semantic_route: Any
) -> None:
    _, key = routed(semantic_route["route"])

    money = ask(gateway, key, "There is an invoice I do not recognise")
    clinic = ask(gateway, key, "Is the patient's fever worse today?")
    neither = ask(gateway, key, "Hello there")

    assert decision(money) == ("billing", "billing")
    assert decision(clinic) == ("triage", "clinical")
    assert decision(neither) == ("base-model", "general")
    reasons = list(UsageRecord.objects.order_by("id").values_list("route_reason", flat=True))
    assert reasons[:2] == ["semantic 1.00", "semantic 1.00"]
    assert reasons[2].startswith("default (semantic") and "below 0.90" in reasons[2]
    # The examples were embedded once (one call), then one call per request.
    assert len(semantic_route["embedder"].requests) == 4


def test_without_its_embedding_engine_a_route_takes_the_default_class(
    gateway: Any, routed: Any, semantic_route: Any
) -> None:
    semantic_route["embedder"].stop()
    _, key = routed(semantic_route["route"])

    response = ask(gateway, key, "There is an invoice I do not recognise")

    assert response.status_code == 200
    assert decision(response) == ("base-model", "general")
    assert UsageRecord.objects.get().route_reason == "default (semantic unavailable)"


def test_a_route_escalating_to_another_route_tries_its_chain(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    serve(approved_model, [fake_engines(status=500)], name="small")
    serve(large_model, [fake_engines()], name="large")
    large = route("large-only", tiers=[("general", large_model)])
    made = route(tiers=[("general", approved_model), ("general", large)])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert decision(response) == ("large-model", "general")
    assert UsageRecord.objects.get().fallbacks == 1


def test_while_the_examples_are_embedded_the_first_requests_take_the_default(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    encoder: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
    task_class: Any,
    settings: Any,
) -> None:
    settings.APPLIANCE_ROUTING_SEMANTIC_TIMEOUT_MS = 200
    serve(encoder, [fake_engines(embedder=_embedder, delay=1)], name="minilm")
    serve(approved_model, [fake_engines()])
    task_class("billing", ["A refund for a duplicate card payment"])
    made = route(
        tiers=[("billing", approved_model), ("general", approved_model)],
        embedding_model_id=encoder.pk,
    )
    _, key = routed(made)

    response = ask(gateway, key, "There is an invoice I do not recognise")

    assert response.status_code == 200
    assert response.elapsed.total_seconds() < 1
    assert decision(response) == ("base-model", "general")
    assert UsageRecord.objects.get().route_reason == "default (semantic warming up)"


def test_a_record_names_no_engine_of_a_tier_that_was_given_up(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
) -> None:
    serve(approved_model, [fake_engines(status=500)], name="small")
    made = route(tiers=[("general", approved_model), ("general", approved_adapters[0])])
    _, key = routed(made)

    response = ask(gateway, key, "hello")

    assert_error(response, 503, "no_healthy_engine")
    record = UsageRecord.objects.get()
    assert (record.engine, record.deployment, record.node, record.adapter) == ("", "", "", "triage")
    event = AuditEvent.objects.filter(action="inference").get()
    assert (event.details["engine"], event.details["adapter"]) == ("", "triage")
    assert event.details["fallbacks"] == ["base-model: engine_500"]


def test_a_route_whose_embedding_model_is_quarantined_sends_it_no_prompt(
    gateway: Any, routed: Any, semantic_route: Any
) -> None:
    BaseModel.objects.filter(name="minilm").update(status=EntryStatus.QUARANTINED)
    _, key = routed(semantic_route["route"])

    response = ask(gateway, key, "There is an invoice I do not recognise")

    assert decision(response) == ("base-model", "general")
    assert UsageRecord.objects.get().route_reason == "default"
    assert semantic_route["embedder"].requests == []


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [({"delay": 3}, "tier_timeout"), ({"stream_error": True}, "engine_stream_error")],
)
def test_a_stream_whose_tier_does_not_start_well_gives_way(
    gateway: Any,
    routed: Any,
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    route: Any,
    behaviour: dict[str, Any],
    why: str,
) -> None:
    troubled, healthy = fake_engines(**behaviour), fake_engines()
    serve(approved_model, [troubled], name="small")
    serve(large_model, [healthy], name="large")
    made = route(tiers=[("general", approved_model, 300), ("general", large_model)])
    _, key = routed(made)

    response = ask(gateway, key, "hello", body={"stream": True})

    assert response.status_code == 200
    assert decision(response) == ("large-model", "general")
    assert '"error"' not in response.text and response.text.rstrip().endswith("data: [DONE]")
    record = UsageRecord.objects.get()
    assert (record.fallbacks, record.deployment, record.status) == (1, "large", 200)
    event = AuditEvent.objects.filter(action="inference").get()
    assert event.details["fallbacks"] == [f"base-model: {why}"]
