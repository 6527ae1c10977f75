"""Requests to a route: decide the task class, then the chain of targets to try, within the
route's cost ceiling and the request's latency budget. The handler tries the chain in order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from django.http import HttpRequest

from appliance.gateway.engines import balancer, table_refresh
from appliance.gateway.errors import invalid, unavailable
from appliance.gateway.upstream import engine_session
from appliance.routing import latency
from appliance.routing.classify import (
    TASK_HEADER,
    Decision,
    UnknownTaskClass,
    by_default,
    by_hint,
    by_rules,
    prompt_text,
)
from appliance.routing.plans import RoutePlan, Tier
from appliance.routing.semantic import EmbeddingUnavailable, Warming, by_similarity

logger = logging.getLogger(__name__)

BUDGET_HEADER = "X-Appliance-Latency-Budget-Ms"
TARGET_HEADER = "X-Appliance-Route-Target"
CLASS_HEADER = "X-Appliance-Task-Class"
MAX_BUDGET_MS = 3_600_000


def latency_budget(request: HttpRequest) -> int | None:
    """The request's latency budget in milliseconds, if it sent one; a 422 if it is malformed."""
    raw = request.headers.get(BUDGET_HEADER)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_BUDGET_MS:
        raise invalid(
            f"`{BUDGET_HEADER}` must be a whole number of milliseconds from 1 to {MAX_BUDGET_MS}.",
            code="invalid_latency_budget",
        )
    return int(raw)


async def embed(model_id: int, inputs: list[str], timeout: float) -> list[list[float]]:
    """Vectors from a ready engine of the embedding model, in input order."""
    await table_refresh()
    engine = balancer.choose(balancer.candidates(model_id, ""), set())
    if engine is None:
        raise EmbeddingUnavailable("no ready engine")
    try:
        async with asyncio.timeout(timeout):
            async with engine_session().post(
                engine.base_url + "/v1/embeddings",
                json={"model": engine.served_name, "input": inputs},
                headers={"Authorization": f"Bearer {engine.api_key}"},
            ) as response:
                if response.status != 200:
                    raise EmbeddingUnavailable(f"engine answered {response.status}")
                document = await response.json()
        data = sorted(document["data"], key=lambda item: item["index"])
        return [list(item["embedding"]) for item in data]
    except (TimeoutError, aiohttp.ClientError, KeyError, TypeError, ValueError) as exc:
        raise EmbeddingUnavailable(type(exc).__name__) from None


async def decide(
    plan: RoutePlan, body: dict[str, Any], hint: str | None, timeout: float
) -> Decision:
    """Hint, rules, then the semantic classifier (given at most ``timeout`` seconds), then the
    default class."""
    if hint is not None:
        try:
            return by_hint(plan, hint)
        except UnknownTaskClass:
            known = ", ".join(sorted(plan.classes))
            raise invalid(
                f"`{TASK_HEADER}` names a task class this route does not know; it knows {known}.",
                code="unknown_task_class",
            ) from None
    text = prompt_text(body)
    decided = by_rules(plan, text, body)
    if decided is not None:
        return decided
    if plan.embedding_model_id is None:
        return by_default(plan)
    if timeout <= 0:
        return by_default(plan, "no time left to classify")
    try:
        return await by_similarity(plan, text, embed, timeout)
    except Warming:
        return by_default(plan, "semantic warming up")
    except EmbeddingUnavailable as exc:
        logger.warning("semantic classifier of route %s unavailable: %s", plan.name, exc)
        return by_default(plan, "semantic unavailable")


def chain_for(plan: RoutePlan, decision: Decision, budget_ms: int | None) -> list[Tier]:
    """The class's chain without targets above the route's cost ceiling, and without those
    that lately took longer than the latency budget (unless that would leave none)."""
    chain = plan.chain(decision.task_class)
    ceiling = plan.cost_ceiling
    affordable = [
        tier
        for tier in chain
        if ceiling is None or tier.price_per_million is None or tier.price_per_million <= ceiling
    ]
    if not affordable:
        why = "it has none" if not chain else f"all cost more than its ceiling of {ceiling:g}"
        raise unavailable(
            f"Route `{plan.name}` has no target for task class `{decision.task_class}`: {why}.",
            code="no_route_target",
        )
    if budget_ms is None:
        return affordable
    fitting = [
        tier for tier in affordable if (latency.estimate(tier.target.name) or 0.0) <= budget_ms
    ]
    return fitting or affordable
