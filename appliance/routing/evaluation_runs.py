"""The evaluation job: every item of the set sent to every candidate through the gateway's own
view in this process (so the production path runs: grants, limits, routing, usage, audit) with a
key that lives for the run only; each answer scored in memory and dropped; the report written."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpResponseBase
from django.test.client import AsyncRequestFactory
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import ApiKey, Application
from appliance.audit.services import audit_record
from appliance.core.actors import system_actor
from appliance.gateway.routed import TARGET_HEADER
from appliance.gateway.views import chat_completions
from appliance.registry.models import BaseModel
from appliance.routing.choices import EvaluationStatus
from appliance.routing.evaluations import APPLICATION, candidate_of, items_of
from appliance.routing.models import Evaluation
from appliance.routing.plans import target_prices
from appliance.routing.scorers import Scorer, scorer_parse

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 10  # answers between progress writes
RUN_TIME_LIMIT = 6 * 3600  # the job's hard time limit (routing.tasks)
SWEEP_MARGIN = 600


@dataclass
class Tally:
    """One candidate's results, built answer by answer."""

    scores: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = True


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _answer_text(document: Any) -> str:
    try:
        content = document["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _prices_by_name() -> dict[str, float]:
    """Each model's and adapter's price per million tokens, by the name the gateway reports."""
    prices = target_prices()
    names = dict(BaseModel.objects.values_list("pk", "name"))
    return {
        (adapter or names.get(model_id, "")): price for (model_id, adapter), price in prices.items()
    }


async def _ask(key: str, body: bytes) -> tuple[HttpResponseBase, float]:
    """One chat completion through the gateway's own view, in this process."""
    request = AsyncRequestFactory().post(
        "/v1/chat/completions",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    started = time.monotonic()
    response = await chat_completions(request)
    return response, (time.monotonic() - started) * 1000


def _record(
    tally: Tally,
    response: HttpResponseBase,
    milliseconds: float,
    scorer: Scorer,
    expected: object,
    candidate: str,
    prices: dict[str, float],
) -> None:
    tally.latencies.append(milliseconds)
    content = getattr(response, "content", b"")
    if response.status_code != 200:
        tally.errors += 1
        tally.scores.append(0.0)
        return
    document = json.loads(content)
    usage = document.get("usage") or {}
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    tally.prompt_tokens += prompt
    tally.completion_tokens += completion
    answered_by = response.get(TARGET_HEADER) or candidate
    price = prices.get(answered_by)
    if price is None:
        tally.priced = False
    else:
        tally.cost += (prompt + completion) * price / 1_000_000
    tally.scores.append(scorer.score(_answer_text(document), expected))


def _report(evaluation: Evaluation, tallies: dict[str, Tally]) -> dict[str, Any]:
    rows = []
    for name, tally in tallies.items():
        candidate = candidate_of(name)
        score = sum(tally.scores) / len(tally.scores) if tally.scores else 0.0
        rows.append(
            {
                "name": name,
                "kind": candidate.kind if candidate else "",
                "parameters": candidate.parameters if candidate else 0,
                "items": len(tally.scores),
                "score": round(score, 4),
                "errors": tally.errors,
                "latency_p50_ms": percentile(tally.latencies, 0.5),
                "latency_p95_ms": percentile(tally.latencies, 0.95),
                "prompt_tokens": tally.prompt_tokens,
                "completion_tokens": tally.completion_tokens,
                "cost": round(tally.cost, 6) if tally.priced else None,
                "meets_target": score >= evaluation.target_score,
            }
        )
    # A candidate withdrawn during the run (no longer approved) cannot be pointed at.
    meeting = [row for row in rows if row["meets_target"] and row["kind"]]
    smallest = min(
        meeting,
        key=lambda row: (row["parameters"], row["cost"] if row["cost"] is not None else math.inf),
        default=None,
    )
    return {
        "target_score": evaluation.target_score,
        "currency": settings.APPLIANCE_CURRENCY,
        "candidates": rows,
        "smallest_meeting": smallest["name"] if smallest else None,
    }


def _progress(evaluation: Evaluation, done: int, total: int) -> None:
    Evaluation.objects.filter(pk=evaluation.pk).update(progress=round(done / total, 4))


async def _run(evaluation: Evaluation, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    from appliance.gateway import upstream

    own_session = not upstream.has_session()  # a worker's loop, not a serving gateway's
    try:
        return await _run_items(evaluation, key, items)
    finally:
        if own_session:
            await upstream.close_session()


async def _run_items(
    evaluation: Evaluation, key: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    prices = await sync_to_async(_prices_by_name)()
    scorers = [scorer_parse(item["scorer"]) for item in items]  # once, not per candidate
    tallies: dict[str, Tally] = {}
    total, done = len(items) * len(evaluation.candidates), 0
    for candidate in evaluation.candidates:
        tally = tallies[candidate] = Tally()
        for item, scorer in zip(items, scorers, strict=True):
            body = json.dumps(
                {
                    "model": candidate,
                    "messages": item["messages"],
                    "max_tokens": evaluation.max_tokens,
                    "temperature": 0,
                }
            ).encode()
            response, milliseconds = await _ask(key, body)
            _record(tally, response, milliseconds, scorer, item.get("expected"), candidate, prices)
            done += 1
            if done % PROGRESS_EVERY == 0:
                await sync_to_async(_progress)(evaluation, done, total)
    return await sync_to_async(_report)(evaluation, tallies)


def evaluation_run(*, evaluation_id: int) -> Evaluation:
    """The job: a short-lived key of the evaluations application, every item against every
    candidate, the report; the key is revoked however it ends."""
    claimed = Evaluation.objects.filter(pk=evaluation_id, status=EvaluationStatus.QUEUED).update(
        status=EvaluationStatus.RUNNING, started_at=timezone.now()
    )
    evaluation = Evaluation.objects.select_related("evaluation_set").get(pk=evaluation_id)
    if not claimed:
        return evaluation  # a redelivered job: it ran, or is running, elsewhere
    system = system_actor("evaluations")
    key = None
    try:
        application = Application.objects.get(name=APPLICATION)
        # A day at most, should the worker die before it can revoke the key.
        key, secret = access.api_key_create(
            actor=system,
            application=application,
            name=f"evaluation {evaluation.pk}",
            expires_in_days=1,
        )
        report = async_to_sync(_run)(evaluation, secret, items_of(evaluation.evaluation_set))
    except Exception as exc:
        # Class names only: a message could quote an item of the set.
        logger.error("evaluation %s failed: %s", evaluation.pk, type(exc).__name__)
        _finish(evaluation, EvaluationStatus.FAILED, {}, type(exc).__name__)
    else:
        _finish(evaluation, EvaluationStatus.SUCCEEDED, report, "")
    finally:
        if key is not None:
            access.api_key_revoke(actor=system, key=key)
    evaluation.refresh_from_db()
    return evaluation


def evaluations_sweep(*, now: datetime | None = None) -> int:
    """Fail evaluations still running past the job's time limit (their worker died) and revoke
    their keys; returns how many. Periodic."""
    now = now or timezone.now()
    stale = Evaluation.objects.filter(
        status=EvaluationStatus.RUNNING,
        started_at__lt=now - timedelta(seconds=RUN_TIME_LIMIT + SWEEP_MARGIN),
    )
    system = system_actor("evaluations")
    swept = 0
    for evaluation in stale:
        keys = ApiKey.objects.filter(
            application__name=APPLICATION,
            name=f"evaluation {evaluation.pk}",
            revoked_at__isnull=True,
        )
        for key in keys:
            access.api_key_revoke(actor=system, key=key)
        _finish(evaluation, EvaluationStatus.FAILED, {}, "WorkerLost")
        swept += 1
    return swept


def _finish(evaluation: Evaluation, status: str, report: dict[str, Any], error: str) -> None:
    with transaction.atomic():
        finished = {"progress": 1.0} if status == EvaluationStatus.SUCCEEDED else {}
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status=status, report=report, error=error, finished_at=timezone.now(), **finished
        )
        audit_record(
            actor=system_actor("evaluations"),
            action="evaluation.finish",
            object_type="evaluation",
            object_id=evaluation.pk,
            details={
                "status": status,
                "smallest_meeting": report.get("smallest_meeting"),
                "scores": {row["name"]: row["score"] for row in report.get("candidates", [])},
                "error": error,
            },
        )
