"""Embedding (pooling) models: deployed without LoRA, and refused adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.core.errors import ValidationFailed
from appliance.fleet.choices import Device
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import desired_engines
from appliance.registry import services as registry
from tests.conftest import actor
from tests.support import write_model_dir

BERT = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "vocab_size": 300,
    "max_position_embeddings": 512,
}


@pytest.fixture
def encoder(
    admin: Any, admin2: Any, import_root: Path, django_capture_on_commit_callbacks: Any
) -> Any:
    with django_capture_on_commit_callbacks(execute=True):
        model, _ = registry.model_import(
            actor=actor(admin2), name="minilm", path=str(write_model_dir(import_root / "m", BERT))
        )
    model.refresh_from_db()
    return registry.entry_approve(actor=actor(admin), entry=model)


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
