"""Fleet fixtures: an approved model with adapters, and enrolled nodes that report GPUs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.accounts.models import User
from appliance.fleet import services
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Node
from appliance.registry import services as registry
from appliance.registry.models import Adapter, BaseModel
from tests.conftest import actor
from tests.support import write_adapter_dir, write_model_dir

GIB = 1024**3


def gpu_reading(
    index: int, *, total_gib: float = 80, free_gib: float | None = None
) -> dict[str, Any]:
    """One GPU as the agent's NVML collector reports it."""
    total = int(total_gib * GIB)
    free = total if free_gib is None else int(free_gib * GIB)
    return {
        "index": index,
        "uuid": f"GPU-{index:04d}-test",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_bytes": total,
        "memory_used_bytes": total - free,
        "memory_free_bytes": free,
        "utilization_gpu_pct": 10,
        "utilization_memory_pct": 5,
        "temperature_c": 40,
        "power_w": 90.5,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
        "throttle_reasons": [],
    }


@pytest.fixture
def approved_model(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    """A base model imported by bob and approved by alice (four eyes)."""
    with django_capture_on_commit_callbacks(execute=True):
        model, _ = registry.model_import(
            actor=actor(admin2), name="base-model", path=str(write_model_dir(import_root / "base"))
        )
    model.refresh_from_db()
    return registry.entry_approve(actor=actor(admin), entry=model)  # type: ignore[return-value]


@pytest.fixture
def approved_adapters(
    approved_model: BaseModel,
    admin: User,
    admin2: User,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> list[Adapter]:
    """Two approved adapters of ``approved_model``, with different files."""
    adapters = []
    for name, rank in (("triage", 8), ("billing", 16)):
        path = write_adapter_dir(import_root / name, rank=rank)
        with django_capture_on_commit_callbacks(execute=True):
            adapter, _ = registry.adapter_import(
                actor=actor(admin2), name=name, base_model=approved_model, path=str(path)
            )
        adapter.refresh_from_db()
        adapters.append(registry.entry_approve(actor=actor(admin), entry=adapter))
    return adapters  # type: ignore[return-value]


@pytest.fixture
def enroll(operator: User) -> Callable[..., tuple[Node, str]]:
    """``enroll(name, gpus=[...])`` → an enrolled node (and its credential) that has reported
    these GPU readings once."""

    def build(name: str, gpus: list[dict[str, Any]] | None = None) -> tuple[Node, str]:
        _, token = services.enrollment_token_create(actor=actor(operator), name=name)
        node, credential = services.node_enroll(token=token, name=name, hostname=f"{name}.local")
        node_heartbeat(node=node, report={"gpus": gpus or []})
        node.refresh_from_db()
        return node, credential

    return build


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
    """An approved embedding model (a BertModel): served without LoRA, used by semantic
    classifiers."""
    with django_capture_on_commit_callbacks(execute=True):
        model, _ = registry.model_import(
            actor=actor(admin2), name="minilm", path=str(write_model_dir(import_root / "m", BERT))
        )
    model.refresh_from_db()
    return registry.entry_approve(actor=actor(admin), entry=model)
