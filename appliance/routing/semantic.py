"""The semantic classifier: embed the prompt with the route's embedding model (served by the
appliance, like any model) and take the task class of the most similar example prompt. The
examples' vectors are computed once per route version and process; a request then costs one
embedding call and a few hundred multiplications per example."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from operator import mul

from appliance.routing.choices import DecisionSource
from appliance.routing.classify import Decision, by_default
from appliance.routing.plans import RoutePlan

Embed = Callable[[int, list[str], float], Awaitable[list[list[float]]]]
Vectors = tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]

MAX_CHARS = 500  # the instruction is at the start; the embedding model's context is short
EXAMPLES_TIMEOUT = 120.0  # embedding every example once may take a while on a busy CPU engine

_examples: dict[tuple[int, int], Vectors] = {}
_pending: dict[tuple[int, int], asyncio.Task[Vectors]] = {}


class Warming(Exception):
    """The examples' vectors are still being computed; this request takes the default."""


class EmbeddingUnavailable(Exception):
    """The embedding model gave no vectors (no engine, an error, too slow)."""


def unit(vector: list[float]) -> tuple[float, ...]:
    norm = math.sqrt(sum(map(mul, vector, vector))) or 1.0
    return tuple(x / norm for x in vector)


async def _compute(plan: RoutePlan, embed: Embed) -> Vectors:
    assert plan.embedding_model_id is not None
    classes = tuple(task_class for task_class, _ in plan.examples)
    vectors = await embed(
        plan.embedding_model_id,
        [text[:MAX_CHARS] for _, text in plan.examples],
        EXAMPLES_TIMEOUT,
    )
    return classes, tuple(unit(v) for v in vectors)


async def _example_vectors(plan: RoutePlan, embed: Embed, wait: float) -> Vectors:
    """The examples' vectors; computed once per route version in a task of its own, which a
    request waits for no longer than ``wait`` (the request is not held up for the first one)."""
    key = (plan.route_id, plan.version)
    cached = _examples.get(key)
    if cached is not None:
        return cached
    task = _pending.get(key)
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        # None yet, or one left by an event loop that has ended (a worker's earlier job).
        task = _pending[key] = asyncio.ensure_future(_compute(plan, embed))
        # Its failure is reported to the request that collects it, if any; never as unretrieved.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        raise Warming("example vectors not ready")
    if _pending.get(key) is task:  # several requests may collect the same task
        del _pending[key]  # computed or failed: the next request uses it or tries again
    if task.cancelled():
        raise EmbeddingUnavailable("example vectors cancelled")
    vectors = task.result()  # raises what the embedding raised
    for old in [k for k in _examples if k[0] == plan.route_id]:
        del _examples[old]  # an earlier version of this route
    _examples[key] = vectors
    return vectors


async def by_similarity(plan: RoutePlan, text: str, embed: Embed, timeout: float) -> Decision:
    """The nearest example's class if it is similar enough, else the default class. Raises
    Warming, or what ``embed`` raises when the embedding model cannot answer in ``timeout``."""
    if not plan.examples or plan.embedding_model_id is None:
        return by_default(plan, "no examples")
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout  # both waits together take no longer than ``timeout``
    classes, vectors = await _example_vectors(plan, embed, timeout)
    left = until - loop.time()
    if left <= 0:
        raise EmbeddingUnavailable("no time left")
    [query] = await embed(plan.embedding_model_id, [text[:MAX_CHARS] or " "], left)
    probe = unit(query)
    best, similarity = classes[0], -1.0
    for task_class, vector in zip(classes, vectors, strict=True):
        score = sum(map(mul, probe, vector))
        if score > similarity:
            best, similarity = task_class, score
    if similarity >= plan.semantic_threshold:
        return Decision(best, DecisionSource.SEMANTIC, f"semantic {similarity:.2f}")
    return by_default(plan, f"semantic {similarity:.2f} below {plan.semantic_threshold:.2f}")


def forget() -> None:
    """Drop every cached example vector (tests; a changed embedding model)."""
    _examples.clear()
    for task in _pending.values():
        with contextlib.suppress(RuntimeError):  # its event loop may be closed already
            task.cancel()
    _pending.clear()
