"""The semantic classifier's example vectors: computed once per route version, shared by the
requests that wait for them, retried after a failure, and not tied to an event loop that ended."""

from __future__ import annotations

import asyncio

import pytest

from appliance.routing import semantic
from appliance.routing.plans import RoutePlan
from appliance.routing.semantic import EmbeddingUnavailable, Warming, by_similarity

PLAN = RoutePlan(
    route_id=1,
    name="r",
    version=1,
    created=0,
    default_class="general",
    classes=frozenset({"general", "billing", "clinical"}),
    embedding_model_id=9,
    examples=(("billing", "refund my card payment"), ("clinical", "the patient has a fever")),
    semantic_threshold=0.5,
)


def toy(text: str) -> list[float]:
    return [float("refund" in text or "invoice" in text), float("fever" in text), 0.1]


class Embedder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0

    async def __call__(self, model_id: int, inputs: list[str], timeout: float) -> list[list[float]]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise EmbeddingUnavailable("down")
        return [toy(text) for text in inputs]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    semantic.forget()


def test_requests_waiting_together_share_one_computation_of_the_examples() -> None:
    embed = Embedder(delay=0.05)

    async def both() -> list[str]:
        decided = await asyncio.gather(
            by_similarity(PLAN, "an invoice I do not know", embed, 1.0),
            by_similarity(PLAN, "fever since yesterday", embed, 1.0),
        )
        return [d.task_class for d in decided]

    assert asyncio.run(both()) == ["billing", "clinical"]
    assert embed.calls == 3  # the examples once, then one call per request


def test_a_request_does_not_wait_longer_than_its_time_for_the_examples() -> None:
    with pytest.raises(Warming):
        asyncio.run(by_similarity(PLAN, "an invoice", Embedder(delay=0.5), 0.05))


def test_examples_left_pending_by_an_ended_event_loop_are_computed_again() -> None:
    with pytest.raises(Warming):
        asyncio.run(by_similarity(PLAN, "an invoice", Embedder(delay=0.5), 0.05))

    decided = asyncio.run(by_similarity(PLAN, "an invoice", Embedder(), 1.0))

    assert decided.task_class == "billing"


def test_after_a_failed_computation_the_next_request_tries_again() -> None:
    with pytest.raises(EmbeddingUnavailable):
        asyncio.run(by_similarity(PLAN, "an invoice", Embedder(fail=True), 1.0))

    assert asyncio.run(by_similarity(PLAN, "an invoice", Embedder(), 1.0)).task_class == "billing"


def test_below_the_threshold_the_default_class_is_taken_with_the_similarity() -> None:
    decided = asyncio.run(by_similarity(PLAN, "hello there", Embedder(), 1.0))

    assert decided.task_class == "general"
    assert decided.reason == "default (semantic 0.10 below 0.50)"
