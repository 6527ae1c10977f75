"""Embedding (pooling) models: deployed without LoRA, and refused adapters."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core.errors import ValidationFailed
from appliance.fleet.choices import Device
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import desired_engines
from tests.conftest import actor


def test_an_embedding_model_is_run_without_lora(encoder: Any, operator: Any, enroll: Any) -> None:
    node, _ = enroll("cpu-box")
    deployment_create(
        actor=actor(operator), name="minilm", model=encoder, device=Device.CPU, node=node
    )

    (engine,) = desired_engines(node)

    assert encoder.generates is False
    assert engine["settings"]["enable_lora"] is False


def test_a_generator_is_run_with_lora(approved_model: Any, operator: Any, enroll: Any) -> None:
    node, _ = enroll("cpu-box")
    deployment_create(
        actor=actor(operator), name="chat", model=approved_model, device=Device.CPU, node=node
    )
    assert desired_engines(node)[0]["settings"]["enable_lora"] is True


def test_adapters_on_an_embedding_model_are_refused(
    encoder: Any, approved_adapters: Any, operator: Any, enroll: Any
) -> None:
    node, _ = enroll("cpu-box")
    with pytest.raises(ValidationFailed) as refused:
        deployment_create(
            actor=actor(operator),
            name="minilm",
            model=encoder,
            adapters=approved_adapters[:1],
            device=Device.CPU,
            node=node,
        )
    assert refused.value.code == "adapters_not_supported"
