"""Model and LoRA adapter directory inspection: headers only, every refusal with a stable code."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from appliance.core.errors import ValidationFailed
from appliance.registry.inspection import (
    AdapterFacts,
    TensorInfo,
    inspect_adapter_dir,
    inspect_model_dir,
    list_files,
    read_safetensors_header,
)

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}
PREFIX = "base_model.model.model.layers"


def write_safetensors(
    path: Path,
    tensors: dict[str, tuple[str, tuple[int, ...]]],
    metadata: dict[str, str] | None = None,
) -> Path:
    """A valid safetensors file with zero-filled data and correct offsets."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def write_raw_safetensors(path: Path, header: object, data_size: int) -> Path:
    """A safetensors file with an arbitrary (possibly broken) header."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_size)
    return path


def llama_config(**overrides: Any) -> dict[str, Any]:
    """A tiny Llama-style config.json with grouped-query attention."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "vocab_size": 300,
        "max_position_embeddings": 2048,
    }
    config.update(overrides)
    return config


def make_model_dir(root: Path, *, config: dict[str, Any] | None = None) -> Path:
    """A complete tiny model directory: config, one weight file and a tokenizer."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config or llama_config()))
    (root / "tokenizer.json").write_text("{}")
    write_safetensors(
        root / "model.safetensors",
        {"model.embed_tokens.weight": ("F32", (300, 128)), "model.norm.weight": ("F32", (128,))},
    )
    return root


def lora_tensors(
    modules: dict[str, tuple[int, int]], *, rank: int = 8, layers: int = 2
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """lora_A/lora_B tensors for modules given as name -> (in_features, out_features)."""
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in modules.items():
            block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = f"{PREFIX}.{layer}.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = ("F32", (rank, fan_in))
            tensors[f"{key}.lora_B.weight"] = ("F32", (fan_out, rank))
    return tensors


QV = {"q_proj": (128, 128), "v_proj": (128, 64)}


def make_adapter_dir(
    root: Path,
    *,
    config: dict[str, Any] | None = None,
    tensors: dict[str, tuple[str, tuple[int, ...]]] | None = None,
) -> Path:
    """A LoRA adapter on q_proj and v_proj with r=8, valid for llama_config()."""
    root.mkdir(parents=True, exist_ok=True)
    adapter_config: dict[str, Any] = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": "meta-llama/Llama-3.2-1B",
    }
    adapter_config.update(config or {})
    (root / "adapter_config.json").write_text(json.dumps(adapter_config))
    write_safetensors(root / "adapter_model.safetensors", tensors or lora_tensors(QV))
    return root


def refusal(exc_info: pytest.ExceptionInfo[ValidationFailed]) -> str:
    """The error code, after checking the detail is a real sentence."""
    assert len(exc_info.value.detail) > 10
    return exc_info.value.code


# --- safetensors headers -------------------------------------------------------------------------


def test_safetensors_header_gives_dtype_shape_and_numel(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "w.safetensors",
        {"a": ("F32", (3, 4)), "b": ("F16", (5,)), "scalar": ("F32", ())},
        metadata={"format": "pt"},
    )
    header = read_safetensors_header(path)
    assert header == {
        "a": TensorInfo("F32", (3, 4)),
        "b": TensorInfo("F16", (5,)),
        "scalar": TensorInfo("F32", ()),
    }
    assert header["a"].numel == 12
    assert header["scalar"].numel == 1
    assert "__metadata__" not in header


def test_safetensors_shorter_than_eight_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"
    assert "short.safetensors" in exc_info.value.detail


def test_safetensors_header_length_past_end_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"
    assert "past the end" in exc_info.value.detail


def test_safetensors_header_length_over_limit_is_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "w.safetensors", {"a": ("F32", (2,))})
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path, max_header_bytes=8)
    assert refusal(exc_info) == "bad_safetensors"
    assert "limit" in exc_info.value.detail


def test_safetensors_header_with_bad_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    raw = b'{"a": {"dtype": '
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"


def test_safetensors_header_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = write_raw_safetensors(tmp_path / "w.safetensors", [1, 2], 0)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"


def test_safetensors_offsets_past_end_of_data_are_refused(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = write_raw_safetensors(tmp_path / "w.safetensors", header, 8)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"
    assert "'a'" in exc_info.value.detail


def test_safetensors_offsets_begin_after_end_are_refused(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}
    path = write_raw_safetensors(tmp_path / "w.safetensors", header, 8)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"


@pytest.mark.parametrize(
    "entry",
    [
        {"shape": [2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2], "data_offsets": [0]},
        {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]},
        "not an object",
    ],
)
def test_safetensors_malformed_entry_is_refused(tmp_path: Path, entry: object) -> None:
    path = write_raw_safetensors(tmp_path / "w.safetensors", {"a": entry}, 8)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"


def test_safetensors_duplicate_tensor_names_are_refused(tmp_path: Path) -> None:
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    raw = f'{{"a": {entry}, "a": {entry}}}'.encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(ValidationFailed) as exc_info:
        read_safetensors_header(path)
    assert refusal(exc_info) == "bad_safetensors"
    assert "duplicate" in exc_info.value.detail


# --- model directories ---------------------------------------------------------------------------


def test_valid_model_dir_reports_its_facts(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    write_safetensors(model / "extra" / "more.safetensors", {"x": ("BF16", (10, 10))})
    facts = inspect_model_dir(model)
    assert facts.architecture == "LlamaForCausalLM"
    assert facts.family == "llama"
    assert facts.parameter_count == 300 * 128 + 128 + 100
    assert facts.context_length == 2048
    assert facts.hidden_size == 128
    assert facts.num_layers == 2
    assert facts.config["vocab_size"] == 300


def test_model_context_length_falls_back_to_other_keys_or_none(tmp_path: Path) -> None:
    config = llama_config(max_position_embeddings=None, n_positions=1024)
    assert inspect_model_dir(make_model_dir(tmp_path / "a", config=config)).context_length == 1024
    bare = {"model_type": "custom"}
    facts = inspect_model_dir(make_model_dir(tmp_path / "b", config=bare))
    assert facts.context_length is None
    assert facts.architecture == ""
    assert facts.hidden_size is None
    assert facts.num_layers is None


def test_model_without_config_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "config.json").unlink()
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "missing_file"
    assert "config.json" in exc_info.value.detail


@pytest.mark.parametrize("content", ["[1, 2]", "{not json"])
def test_model_with_config_that_is_not_a_json_object_is_refused(
    tmp_path: Path, content: str
) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "config.json").write_text(content)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "bad_config"


def test_model_without_tokenizer_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "tokenizer.json").unlink()
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "missing_tokenizer"


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer_config.json"])
def test_model_with_other_tokenizer_files_is_accepted(tmp_path: Path, name: str) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "tokenizer.json").rename(model / name)
    assert inspect_model_dir(model).family == "llama"


def test_model_with_only_pickle_weights_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "no_safetensors"
    assert "pytorch_model.bin" in exc_info.value.detail


def test_model_without_any_weights_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "model.safetensors").unlink()
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "no_safetensors"


def test_model_with_corrupt_safetensors_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "model-00002-of-00002.safetensors").write_bytes(b"\0\0")
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "bad_safetensors"
    assert "model-00002-of-00002.safetensors" in exc_info.value.detail


def test_model_with_symlink_outside_the_directory_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (model / "notes.txt").symlink_to(secret)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "unsafe_path"
    assert "notes.txt" in exc_info.value.detail


def test_model_with_dangling_symlink_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "gone.txt").symlink_to(model / "nothing-here")
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "unsafe_path"


def test_model_with_symlink_inside_the_directory_is_accepted(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / "blobs").mkdir()
    (model / "tokenizer.json").rename(model / "blobs" / "abc123")
    (model / "tokenizer.json").symlink_to(Path("blobs") / "abc123")
    (model / "linked-dir").symlink_to(model / "blobs")
    assert inspect_model_dir(model).parameter_count == 300 * 128 + 128


def test_model_with_fifo_is_refused(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    os.mkfifo(model / "pipe")
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(model)
    assert refusal(exc_info) == "unsafe_path"


def test_model_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_model_dir(tmp_path / "missing")
    assert refusal(exc_info) == "not_a_directory"


# --- list_files ----------------------------------------------------------------------------------


def test_list_files_gives_sorted_relative_posix_paths_including_hidden(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "empty").mkdir()
    assert list_files(tmp_path) == [".git/HEAD", "a.txt", "b/z.txt"]


def test_list_files_refuses_any_symlink_even_inside_root(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    with pytest.raises(ValidationFailed) as exc_info:
        list_files(tmp_path)
    assert refusal(exc_info) == "unsafe_path"
    assert "b.txt" in exc_info.value.detail


def test_list_files_refuses_a_fifo(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe")
    with pytest.raises(ValidationFailed) as exc_info:
        list_files(tmp_path)
    assert refusal(exc_info) == "unsafe_path"
    assert "sub/pipe" in exc_info.value.detail


# --- LoRA adapters -------------------------------------------------------------------------------


def test_valid_adapter_reports_its_facts(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    facts = inspect_adapter_dir(adapter, base_config=llama_config())
    assert facts == AdapterFacts(
        rank=8,
        alpha=16.0,
        target_modules=("q_proj", "v_proj"),
        base_model_name_or_path="meta-llama/Llama-3.2-1B",
        tensor_count=8,
    )


def test_adapter_on_every_projection_uses_kv_heads_and_default_head_dim(tmp_path: Path) -> None:
    modules = {
        "q_proj": (128, 128),
        "k_proj": (128, 64),
        "v_proj": (128, 64),
        "o_proj": (128, 128),
        "gate_proj": (128, 256),
        "up_proj": (128, 256),
        "down_proj": (256, 128),
    }
    adapter = make_adapter_dir(
        tmp_path / "a",
        config={"target_modules": list(modules), "r": 4, "base_model_name_or_path": None},
        tensors=lora_tensors(modules, rank=4),
    )
    base = llama_config()
    del base["head_dim"]
    facts = inspect_adapter_dir(adapter, base_config=base)
    assert facts.tensor_count == 28
    assert facts.base_model_name_or_path is None
    assert len(facts.target_modules) == 7


def test_adapter_base_model_name_need_not_match_anything(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"base_model_name_or_path": "/x/y"})
    facts = inspect_adapter_dir(adapter, base_config=llama_config())
    assert facts.base_model_name_or_path == "/x/y"


def test_adapter_without_adapter_config_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "missing_file"
    assert "adapter_config.json" in exc_info.value.detail


def test_adapter_that_is_not_lora_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"peft_type": "IA3"})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "not_lora"
    assert "IA3" in exc_info.value.detail


def test_dora_adapter_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"use_dora": True})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unsupported_adapter"


def test_adapter_with_rank_pattern_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"rank_pattern": {"q_proj": 4}})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unsupported_adapter"


def test_adapter_with_string_target_modules_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"target_modules": "all-linear"})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "bad_config"
    assert "target_modules must be an explicit list" in exc_info.value.detail
    assert "target_modules" in exc_info.value.fields


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("r", 0),
        ("r", -8),
        ("r", 8.0),
        ("r", True),
        ("lora_alpha", "16"),
        ("target_modules", []),
        ("target_modules", ["q_proj", 3]),
    ],
)
def test_adapter_with_invalid_lora_settings_is_refused(
    tmp_path: Path, key: str, value: object
) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={key: value})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "bad_config"
    assert key in exc_info.value.fields


def test_adapter_targeting_an_unknown_module_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", config={"target_modules": ["q_proj", "lm_head"]})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "base_mismatch"
    assert "lm_head" in exc_info.value.detail


def test_adapter_without_safetensors_weights_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "missing_file"
    assert "adapter_model.safetensors" in exc_info.value.detail


def test_adapter_with_only_pickle_weights_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "no_safetensors"


def test_adapter_with_symlink_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    (adapter / "README.md").symlink_to(tmp_path)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unsafe_path"


def test_adapter_with_no_tensors_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    write_safetensors(adapter / "adapter_model.safetensors", {})
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "empty_adapter"


def test_adapter_with_layer_index_out_of_range_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a", tensors=lora_tensors(QV, layers=3))
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "base_mismatch"
    assert "layers.2." in exc_info.value.detail


def test_adapter_with_wrong_rank_in_a_shape_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    tensors[f"{PREFIX}.1.self_attn.q_proj.lora_A.weight"] = ("F32", (4, 128))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "shape_mismatch"
    detail = exc_info.value.detail
    assert f"{PREFIX}.1.self_attn.q_proj.lora_A.weight" in detail
    assert "[4, 128]" in detail
    assert "[8, 128]" in detail


def test_adapter_with_wrong_b_shape_is_refused(tmp_path: Path) -> None:
    # v_proj out is kv_heads * head_dim = 64; a q-sized B betrays a base without GQA.
    tensors = lora_tensors(QV)
    tensors[f"{PREFIX}.0.self_attn.v_proj.lora_B.weight"] = ("F32", (128, 8))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "shape_mismatch"
    assert "[128, 8]" in exc_info.value.detail
    assert "[64, 8]" in exc_info.value.detail


def test_adapter_for_a_bigger_base_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    base = llama_config(hidden_size=256, head_dim=64)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=base)
    assert refusal(exc_info) == "shape_mismatch"


def test_adapter_with_a_missing_b_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    del tensors[f"{PREFIX}.1.self_attn.v_proj.lora_B.weight"]
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "missing_tensor"
    assert f"{PREFIX}.1.self_attn.v_proj.lora_B.weight" in exc_info.value.detail


def test_adapter_with_a_missing_a_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    del tensors[f"{PREFIX}.0.self_attn.q_proj.lora_A.weight"]
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "missing_tensor"


def test_adapter_with_tensor_for_untargeted_module_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors({**QV, "k_proj": (128, 64)})
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unexpected_tensor"
    assert "k_proj" in exc_info.value.detail


def test_adapter_with_tensor_for_unknown_module_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    tensors[f"{PREFIX}.0.self_attn.qkv_proj.lora_A.weight"] = ("F32", (8, 128))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "base_mismatch"
    assert "qkv_proj" in exc_info.value.detail


@pytest.mark.parametrize(
    "name",
    [
        "base_model.model.lm_head.weight",
        f"{PREFIX}.0.self_attn.q_proj.lora_magnitude_vector",
        f"{PREFIX}.01.self_attn.q_proj.lora_A.weight",
    ],
)
def test_adapter_with_non_lora_tensor_is_refused(tmp_path: Path, name: str) -> None:
    tensors = lora_tensors(QV)
    tensors[name] = ("F32", (8,))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unexpected_tensor"
    assert name in exc_info.value.detail


def test_adapter_with_projection_under_the_wrong_block_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    tensors[f"{PREFIX}.0.mlp.q_proj.lora_A.weight"] = ("F32", (8, 128))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "base_mismatch"


def test_adapter_with_integer_weights_is_refused(tmp_path: Path) -> None:
    tensors = lora_tensors(QV)
    tensors[f"{PREFIX}.0.self_attn.q_proj.lora_A.weight"] = ("I8", (8, 128))
    adapter = make_adapter_dir(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=llama_config())
    assert refusal(exc_info) == "unsupported_dtype"


def test_adapter_against_base_config_without_sizes_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path / "a")
    base = llama_config()
    del base["intermediate_size"]
    with pytest.raises(ValidationFailed) as exc_info:
        inspect_adapter_dir(adapter, base_config=base)
    assert refusal(exc_info) == "unsupported_base"
    assert "intermediate_size" in exc_info.value.detail
