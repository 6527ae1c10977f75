"""Evaluations: a set run against candidates through the real gateway path (fake engines), the
report (score, latency percentiles, tokens, cost, the smallest candidate meeting the target), the
job's life cycle, and pointing a route at the winner."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from appliance.access import services as access_services
from appliance.access.models import ApiKey, Application
from appliance.audit.models import AuditEvent
from appliance.core.errors import Conflict, ValidationFailed
from appliance.fleet.models import Deployment
from appliance.gateway.models import UsageRecord
from appliance.registry.models import BaseModel
from appliance.routing import costs, evaluation_runs, evaluations
from appliance.routing.choices import CostKind, EvaluationStatus
from appliance.routing.evaluation_runs import evaluation_run, evaluations_sweep, percentile
from appliance.routing.evaluations import items_of
from appliance.routing.models import Evaluation, RouteTier
from tests.conftest import actor

QUESTIONS = [
    ("Capital of France?", "Paris"),
    ("Which city hosts the Louvre?", "Paris"),
    ("Where is the Eiffel Tower?", "Paris"),
    ("Biggest city in England?", "London"),
]


def queued(
    operator: Any,
    evaluation_set: Any,
    target_score: float,
    candidates: list[str] | None = None,
) -> Evaluation:
    """An evaluation created (not run) of the set against large-model and base-model."""
    return evaluations.evaluation_create(
        actor=actor(operator),
        evaluation_set=evaluation_set,
        candidates=candidates or ["large-model", "base-model"],
        target_score=target_score,
        enqueue=False,
    )


def jsonl(rows: list[tuple[str, str]]) -> str:
    return "\n".join(
        json.dumps({"messages": [{"role": "user", "content": q}], "expected": a}) for q, a in rows
    )


@pytest.fixture
def candidates(
    approved_model: Any, large_model: Any, serve: Any, fake_engines: Any, operator: Any
) -> dict[str, Any]:
    """base-model answers "Paris" (small, cheap); large-model answers "London" (big)."""
    BaseModel.objects.filter(pk=large_model.pk).update(parameter_count=7_000_000_000)
    BaseModel.objects.filter(pk=approved_model.pk).update(parameter_count=1_000_000_000)
    small, large = fake_engines(content="Paris"), fake_engines(content="London")
    serve(approved_model, [small], name="small")
    serve(large_model, [large], name="large")
    costs.cost_model_set(
        actor=actor(operator),
        deployment=Deployment.objects.get(name="small"),
        kind=CostKind.PER_MILLION,
        price_per_million=Decimal("2"),
    )
    return {"small": small, "large": large}


@pytest.fixture
def evaluation_set(operator: Any) -> Any:
    return evaluations.evaluation_set_create(
        actor=actor(operator),
        name="capitals",
        jsonl=jsonl(QUESTIONS),
        default_scorer={"type": "exact"},
    )


def test_an_evaluation_scores_each_candidate_through_the_gateway(
    candidates: Any, evaluation_set: Any, operator: Any, settings: Any
) -> None:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0
    evaluation = queued(operator, evaluation_set, 0.7)

    done = evaluation_run(evaluation_id=evaluation.pk)

    assert (done.status, done.progress, done.error) == (EvaluationStatus.SUCCEEDED, 1.0, "")
    rows = {row["name"]: row for row in done.report["candidates"]}
    assert rows["base-model"]["score"] == 0.75 and rows["large-model"]["score"] == 0.25
    assert rows["base-model"]["meets_target"] and not rows["large-model"]["meets_target"]
    assert done.report["smallest_meeting"] == "base-model"
    # Fake engines charge 7 prompt + 3 completion tokens per answer.
    assert (rows["base-model"]["prompt_tokens"], rows["base-model"]["completion_tokens"]) == (
        28,
        12,
    )
    assert rows["base-model"]["cost"] == pytest.approx(40 * 2 / 1_000_000)
    assert rows["large-model"]["cost"] is None  # no cost model: not priced
    assert rows["base-model"]["latency_p50_ms"] > 0
    assert rows["base-model"]["latency_p95_ms"] >= rows["base-model"]["latency_p50_ms"]
    assert len(candidates["small"].requests) == 4 and len(candidates["large"].requests) == 4
    assert candidates["small"].requests[0]["body"]["max_tokens"] == 64
    # The production path: usage records of the evaluations application, and audit events.
    app = Application.objects.get(name=evaluations.APPLICATION)
    assert UsageRecord.objects.filter(application=app, status=200).count() == 8
    assert AuditEvent.objects.filter(action="inference").count() == 8
    # The job's key is revoked when it ends; the answers are not kept anywhere.
    assert ApiKey.objects.get(application=app).revoked_at is not None
    assert "Paris" not in json.dumps(done.report)
    finished = AuditEvent.objects.get(action="evaluation.finish")
    assert finished.details["smallest_meeting"] == "base-model"


def test_without_a_candidate_meeting_the_target_there_is_no_winner(
    candidates: Any, evaluation_set: Any, operator: Any, settings: Any
) -> None:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0
    evaluation = queued(operator, evaluation_set, 0.9)

    done = evaluation_run(evaluation_id=evaluation.pk)

    assert done.report["smallest_meeting"] is None


def test_a_candidate_whose_engine_fails_scores_zero_and_counts_errors(
    approved_model: Any,
    large_model: Any,
    serve: Any,
    fake_engines: Any,
    evaluation_set: Any,
    operator: Any,
    settings: Any,
) -> None:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0
    serve(approved_model, [fake_engines(content="Paris")], name="small")
    serve(large_model, [fake_engines(status=500)], name="large")
    evaluation = queued(operator, evaluation_set, 0.5, ["base-model", "large-model"])

    done = evaluation_run(evaluation_id=evaluation.pk)

    rows = {row["name"]: row for row in done.report["candidates"]}
    assert (rows["large-model"]["score"], rows["large-model"]["errors"]) == (0.0, 4)
    assert done.status == EvaluationStatus.SUCCEEDED


def test_the_winner_becomes_the_first_tier_of_a_route_in_one_step(
    candidates: Any,
    evaluation_set: Any,
    operator: Any,
    settings: Any,
    route: Any,
    large_model: Any,
    task_class: Any,
) -> None:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0
    made = route(tiers=[("general", large_model)])
    evaluation = queued(operator, evaluation_set, 0.7)
    evaluation_run(evaluation_id=evaluation.pk)

    updated = evaluations.evaluation_apply(
        actor=actor(operator),
        evaluation=Evaluation.objects.get(pk=evaluation.pk),
        route=made,
        task_class=task_class("general"),
    )

    chain = [
        tier.model.name
        for tier in RouteTier.objects.filter(route=made).order_by("position")
        if tier.model
    ]
    assert chain == ["base-model", "large-model"]
    assert updated.version == 2
    assert AuditEvent.objects.filter(action="evaluation.apply").count() == 1


def test_an_evaluation_without_a_winner_cannot_be_applied(
    evaluation_set: Any,
    operator: Any,
    route: Any,
    approved_model: Any,
    large_model: Any,
    task_class: Any,
) -> None:
    made = route(tiers=[("general", large_model)])
    evaluation = queued(operator, evaluation_set, 0.7)

    with pytest.raises(Conflict) as refused:
        evaluations.evaluation_apply(
            actor=actor(operator),
            evaluation=evaluation,
            route=made,
            task_class=task_class("general"),
        )

    assert refused.value.code == "no_winner"


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["base-model"], "from 2 to 8 candidates"),
        (["base-model", "base-model"], "each candidate once"),
        (["base-model", "nope"], "nope: not an approved text model, adapter or active route"),
    ],
)
def test_bad_candidates_are_refused_and_nothing_is_queued(
    evaluation_set: Any, operator: Any, approved_model: Any, names: list[str], problem: str
) -> None:
    before = AuditEvent.objects.count()

    with pytest.raises(ValidationFailed) as refused:
        queued(operator, evaluation_set, 0.5, names)

    assert problem in refused.value.fields["candidates"]
    assert Evaluation.objects.count() == 0 and AuditEvent.objects.count() == before
    assert not Application.objects.filter(name=evaluations.APPLICATION).exists()


def test_an_evaluation_set_with_bad_lines_is_refused_by_line(operator: Any) -> None:
    text = jsonl(QUESTIONS[:1]) + '\n{"messages": [], "expected": "x"}\nnot json'

    with pytest.raises(ValidationFailed) as refused:
        evaluations.evaluation_set_create(
            actor=actor(operator), name="bad", jsonl=text, default_scorer={"type": "exact"}
        )

    problems = refused.value.fields["jsonl"]
    assert any(p.startswith("line 2:") for p in problems)
    assert any(p.startswith("line 3:") for p in problems)


def test_the_set_keeps_each_items_scorer(operator: Any) -> None:
    text = json.dumps(
        {
            "messages": [{"role": "user", "content": "2+2?"}],
            "expected": 4,
            "scorer": {"type": "numeric", "tolerance": 0.5},
        }
    )

    made = evaluations.evaluation_set_create(actor=actor(operator), name="sums", jsonl=text)

    assert made.item_count == 1
    assert items_of(made)[0]["scorer"] == {"type": "numeric", "tolerance": 0.5, "relative": False}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
    assert percentile([], 0.5) is None


def test_an_evaluation_whose_worker_died_is_failed_and_its_key_revoked(
    evaluation_set: Any, operator: Any, approved_model: Any, large_model: Any
) -> None:
    evaluation = queued(operator, evaluation_set, 0.5)
    app = Application.objects.get(name=evaluations.APPLICATION)
    key, _ = access_services.api_key_create(
        actor=actor(operator), application=app, name=f"evaluation {evaluation.pk}"
    )
    started = timezone.now() - timedelta(hours=7)
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.RUNNING, started_at=started
    )
    recent = queued(operator, evaluation_set, 0.5)
    Evaluation.objects.filter(pk=recent.pk).update(
        status=EvaluationStatus.RUNNING, started_at=timezone.now()
    )

    assert evaluations_sweep() == 1

    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.error) == (EvaluationStatus.FAILED, "WorkerLost")
    assert Evaluation.objects.get(pk=recent.pk).status == EvaluationStatus.RUNNING
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="evaluation.finish").count() == 1


def test_a_candidate_withdrawn_during_the_run_is_not_named_the_winner(
    candidates: Any,
    evaluation_set: Any,
    operator: Any,
    settings: Any,
    approved_model: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0
    evaluation = queued(operator, evaluation_set, 0.7)
    original = evaluation_runs._report

    def withdraw_then_report(*args: Any) -> Any:
        BaseModel.objects.filter(pk=approved_model.pk).update(status="retired")
        return original(*args)

    monkeypatch.setattr(evaluation_runs, "_report", withdraw_then_report)

    done = evaluation_run(evaluation_id=evaluation.pk)

    rows = {row["name"]: row for row in done.report["candidates"]}
    assert rows["base-model"]["meets_target"] and rows["base-model"]["kind"] == ""
    assert done.report["smallest_meeting"] is None
