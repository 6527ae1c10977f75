"""Reconciliation decisions: what to start, stop and restart, and which adapters to (un)load."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from appliance.agent.reconcile import (
    AdapterChanges,
    Plan,
    adapter_changes,
    engine_fingerprint,
    plan,
)


def spec(instance: str = "i-1", **changes: Any) -> dict[str, Any]:
    desired: dict[str, Any] = {
        "instance": instance,
        "deployment": "chat",
        "replica": 0,
        "device": "gpu",
        "gpu_indices": [0],
        "model": {"name": "llama", "digest": "a" * 64, "files": []},
        "adapters": [{"name": "legal", "digest": "b" * 64, "files": []}],
        "settings": {
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.9,
            "tensor_parallel_size": 1,
            "dtype": "auto",
            "quantization": "",
            "max_loras": 4,
            "max_lora_rank": 16,
        },
        "api_key": "eng_one",
    }
    desired.update(changes)
    return desired


def running_as(*specs: dict[str, Any]) -> dict[str, str]:
    return {s["instance"]: engine_fingerprint(s) for s in specs}


def with_setting(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(desired: dict[str, Any]) -> None:
        desired["settings"][name] = value

    return change


def test_nothing_to_do_when_running_matches_desired() -> None:
    desired = [spec("i-1"), spec("i-2")]

    assert plan(desired, running_as(*desired)) == Plan(start=(), stop=(), restart=())


def test_desired_engines_that_do_not_run_are_started() -> None:
    desired = [spec("i-2"), spec("i-1"), spec("i-3")]

    steps = plan(desired, running_as(spec("i-2")))

    assert steps.start == ("i-1", "i-3")
    assert steps.stop == ()
    assert steps.restart == ()


def test_running_engines_that_are_no_longer_desired_are_stopped() -> None:
    steps = plan([spec("i-1")], running_as(spec("i-1"), spec("i-9"), spec("i-5")))

    assert steps == Plan(start=(), stop=("i-5", "i-9"), restart=())


def test_everything_stops_when_nothing_is_desired() -> None:
    assert plan([], running_as(spec("i-1"), spec("i-2"))).stop == ("i-1", "i-2")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s["model"].update(digest="c" * 64), id="model-digest"),
        pytest.param(with_setting("max_model_len", 8192), id="max-model-len"),
        pytest.param(with_setting("gpu_memory_utilization", 0.5), id="gpu-utilization"),
        pytest.param(with_setting("dtype", "bfloat16"), id="dtype"),
        pytest.param(with_setting("max_loras", 8), id="max-loras"),
        pytest.param(lambda s: s.update(gpu_indices=[1]), id="gpu-indices"),
        pytest.param(lambda s: s.update(gpu_indices=[0, 1]), id="more-gpus"),
        pytest.param(lambda s: s.update(device="cpu"), id="device"),
        pytest.param(lambda s: s.update(api_key="eng_two"), id="api-key"),
        pytest.param(lambda s: s.update(deployment="renamed"), id="served-name"),
    ],
)
def test_engine_is_restarted_when_what_it_was_started_with_changes(
    change: Callable[[dict[str, Any]], None],
) -> None:
    before = spec("i-1")
    after = copy.deepcopy(before)
    change(after)

    steps = plan([after, spec("i-2")], running_as(before, spec("i-2")))

    assert steps == Plan(start=(), stop=(), restart=("i-1",))


@pytest.mark.parametrize(
    "adapters",
    [
        pytest.param([], id="all-removed"),
        pytest.param(
            [
                {"name": "legal", "digest": "b" * 64, "files": []},
                {"name": "medical", "digest": "d" * 64, "files": []},
            ],
            id="one-added",
        ),
        pytest.param([{"name": "legal", "digest": "e" * 64, "files": []}], id="new-version"),
    ],
)
def test_engine_is_not_restarted_when_only_its_adapters_change(
    adapters: list[dict[str, Any]],
) -> None:
    before = spec("i-1")

    steps = plan([spec("i-1", adapters=adapters)], running_as(before))

    assert steps == Plan(start=(), stop=(), restart=())


def test_fingerprint_ignores_the_order_of_keys() -> None:
    desired = spec()
    reordered = dict(reversed(list(desired.items())))
    reordered["settings"] = dict(reversed(list(desired["settings"].items())))

    assert engine_fingerprint(reordered) == engine_fingerprint(desired)


def test_adapters_wanted_but_not_loaded_are_loaded_and_unwanted_ones_unloaded() -> None:
    desired = [{"name": "b"}, {"name": "c"}, {"name": "a"}]

    changes = adapter_changes(desired, {"c", "x", "w"})

    assert changes == AdapterChanges(load=("a", "b"), unload=("w", "x"))


def test_no_adapter_changes_when_loaded_matches_desired() -> None:
    assert adapter_changes([{"name": "a"}], {"a"}) == AdapterChanges(load=(), unload=())


def test_every_loaded_adapter_is_unloaded_when_none_is_desired() -> None:
    assert adapter_changes([], {"b", "a"}) == AdapterChanges(load=(), unload=("a", "b"))
