"""Writers of tiny Hugging Face style model and LoRA adapter directories, for registry tests.

The files are real in layout (config.json, tokenizer files, safetensors with valid headers) but the
weights are zeros; nothing here loads them.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings

LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_hidden_layers": 2,
    "vocab_size": 300,
    "max_position_embeddings": 512,
}


def write_safetensors(path: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    """A safetensors file of F32 zeros with the given tensor shapes."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + 4 * count],
        }
        offset += 4 * count
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def write_model_dir(path: Path, config: dict[str, Any] | None = None) -> Path:
    """A two-layer Llama-shaped model directory."""
    config = config or LLAMA_CONFIG
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    hidden = config["hidden_size"]
    tensors = {"model.embed_tokens.weight": (config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = (hidden, hidden)
    write_safetensors(path / "model.safetensors", tensors)
    return path


def write_adapter_dir(
    path: Path,
    *,
    rank: int = 8,
    modules: tuple[str, ...] = ("q_proj", "v_proj"),
    config: dict[str, Any] | None = None,
    b_rows: dict[str, int] | None = None,
) -> Path:
    """A LoRA adapter for LLAMA_CONFIG (q_proj out 128, v_proj out 2 kv heads x 32 = 64)."""
    config = config or LLAMA_CONFIG
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": 16,
                "target_modules": list(modules),
                "base_model_name_or_path": "tiny-llama",
            }
        )
    )
    head_dim = config["head_dim"]
    outs = {
        "q_proj": config["num_attention_heads"] * head_dim,
        "k_proj": config["num_key_value_heads"] * head_dim,
        "v_proj": config["num_key_value_heads"] * head_dim,
    }
    outs.update(b_rows or {})
    tensors = {}
    for i in range(config["num_hidden_layers"]):
        for module in modules:
            stem = f"base_model.model.model.layers.{i}.self_attn.{module}"
            tensors[f"{stem}.lora_A.weight"] = (rank, config["hidden_size"])
            tensors[f"{stem}.lora_B.weight"] = (outs[module], rank)
    write_safetensors(path / "adapter_model.safetensors", tensors)
    return path


def blob_files() -> list[Path]:
    """Every blob in the artifact store of the current test."""
    root = Path(settings.APPLIANCE_ARTIFACT_ROOT) / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def staging_entries() -> list[Path]:
    staging = Path(settings.APPLIANCE_STAGING_DIR)
    return sorted(staging.iterdir()) if staging.exists() else []


def registry_state() -> dict[str, Any]:
    """Everything a refused registry request must leave as it was. Denials are audited, and
    api_as() audits the token it makes, so those two actions are not counted."""
    from appliance.audit.models import AuditEvent
    from appliance.core.models import Job
    from appliance.registry.models import Adapter, Artifact, BaseModel

    return {
        "models": list(BaseModel.objects.values_list("pk", "status").order_by("pk")),
        "adapters": list(Adapter.objects.values_list("pk", "status").order_by("pk")),
        "artifacts": Artifact.objects.count(),
        "jobs": Job.objects.count(),
        "audit": Counter(
            AuditEvent.objects.exclude(
                action__in=["permission.denied", "token.create"]
            ).values_list("action", flat=True)
        ),
        "blobs": blob_files(),
        "staging": staging_entries(),
    }


def assert_refused(response: Any, status: int, code: str, before: dict[str, Any]) -> None:
    """The answer has this status and error code, and the registry is exactly as it was."""
    data = response.json() if response.content else None
    assert response.status_code == status, data
    assert data["code"] == code, data
    assert registry_state() == before
