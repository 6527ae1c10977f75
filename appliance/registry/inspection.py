"""Read model and LoRA adapter directories (Hugging Face layout) without loading any weights.

Only JSON files and safetensors headers are read: nothing is unpickled or imported, so inspecting
an untrusted upload cannot run code. Every refusal is a ``ValidationFailed`` with a stable ``code``
and a ``detail`` that names the file and says what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from appliance.core.errors import ValidationFailed

# Bytes per element of the safetensors dtypes we know; unknown dtypes are accepted unchecked.
_DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_JSON_BYTES = 16 * 1024 * 1024
_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LORA_KEY = re.compile(
    r"base_model\.model\.model\.layers\.(0|[1-9][0-9]*)\.(self_attn|mlp)\."
    r"([A-Za-z0-9_]+)\.lora_(A|B)\.weight"
)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as declared in a safetensors header."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Element count; a scalar (shape ``()``) has one element."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelFacts:
    """What the registry records about a base model, read from config.json and weight headers."""

    architecture: str
    family: str
    parameter_count: int
    context_length: int | None
    hidden_size: int | None
    num_layers: int | None
    config: dict[str, Any] = field(repr=False, hash=False, compare=False)


@dataclass(frozen=True)
class AdapterFacts:
    """What the registry records about a LoRA adapter once it has been checked against its base."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model_name_or_path: str | None
    tensor_count: int


def _bad_safetensors(path: Path, problem: str) -> ValidationFailed:
    return ValidationFailed(
        f"{path.name} is not a valid safetensors file: {problem}.", code="bad_safetensors"
    )


def _is_int(value: object) -> TypeGuard[int]:
    """True for real ints only: JSON ``true`` parses to a bool, which is an int in Python."""
    return isinstance(value, int) and not isinstance(value, bool)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key would silently shadow the first, so refuse it."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def read_safetensors_header(
    path: Path, *, max_header_bytes: int = 100 * 1024 * 1024
) -> dict[str, TensorInfo]:
    """Tensor name -> dtype and shape, from the header only; the weights are never read.

    Offsets and sizes are checked against the file so that a truncated or crafted file is refused
    here rather than crashing the inference engine later.
    """
    try:
        with path.open("rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size
            if file_size < 8:
                raise _bad_safetensors(path, f"the file is {file_size} bytes, shorter than 8")
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > max_header_bytes:
                raise _bad_safetensors(
                    path, f"header length {header_len} exceeds the limit of {max_header_bytes}"
                )
            if header_len > file_size - 8:
                raise _bad_safetensors(
                    path,
                    f"header length {header_len} runs past the end of the {file_size}-byte file",
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise ValidationFailed(
            f"{path.name} could not be read: {exc.strerror or exc}.", code="bad_safetensors"
        ) from exc
    if len(raw) != header_len:
        raise _bad_safetensors(path, "the file changed while it was read")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad_safetensors(path, f"the header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _bad_safetensors(path, "the header is not a JSON object")

    data_size = file_size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise _bad_safetensors(path, "__metadata__ is not a JSON object")
            continue
        tensors[name] = _tensor_info(path, name, entry, data_size)
    return tensors


def _tensor_info(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    """Check one header entry against the data section and turn it into a TensorInfo."""
    if not isinstance(entry, dict):
        raise _bad_safetensors(path, f"entry {name!r} is not a JSON object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or not dtype:
        raise _bad_safetensors(path, f"tensor {name!r} has no dtype string")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad_safetensors(
            path, f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers"
        )
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise _bad_safetensors(
            path, f"tensor {name!r} has data_offsets {offsets!r}, not two non-negative integers"
        )
    begin, end = offsets
    if begin > end:
        raise _bad_safetensors(path, f"tensor {name!r} has data_offsets begin {begin} > end {end}")
    if end > data_size:
        raise _bad_safetensors(
            path,
            f"tensor {name!r} ends at byte {end} but the data section is only {data_size} bytes",
        )
    info = TensorInfo(dtype=dtype, shape=tuple(shape))
    itemsize = _DTYPE_SIZES.get(dtype)
    if itemsize is not None and end - begin != info.numel * itemsize:
        raise _bad_safetensors(
            path,
            f"tensor {name!r} ({dtype}, shape {list(shape)}) needs {info.numel * itemsize} bytes "
            f"but its data_offsets span {end - begin}",
        )
    return info


def _require_dir(path: Path) -> None:
    if not path.is_dir():
        raise ValidationFailed(f"{path} is not a directory.", code="not_a_directory")


def _scan(root: Path, *, allow_internal_symlinks: bool) -> list[str]:
    """Sorted relative POSIX paths of the files under root, refusing anything unsafe.

    Symlinks are refused outright, or (for model directories) followed only when they resolve
    inside root; a symlinked directory inside root is not descended, since its real path is.
    Devices, fifos and sockets are always refused.
    """
    _require_dir(root)
    root_real = root.resolve(strict=True)
    files: list[str] = []
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                entry_path = Path(entry.path)
                rel = entry_path.relative_to(root).as_posix()
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    if not allow_internal_symlinks:
                        raise ValidationFailed(
                            f"{rel} is a symbolic link; links are not accepted here.",
                            code="unsafe_path",
                        )
                    mode = _internal_link_mode(entry_path, rel, root_real)
                    if stat.S_ISREG(mode):
                        files.append(rel)
                elif stat.S_ISDIR(mode):
                    stack.append(entry_path)
                elif stat.S_ISREG(mode):
                    files.append(rel)
                else:
                    raise ValidationFailed(
                        f"{rel} is a device, fifo or socket, not a regular file.",
                        code="unsafe_path",
                    )
    return sorted(files)


def _internal_link_mode(link: Path, rel: str, root_real: Path) -> int:
    """The mode of what a symlink points to, provided it is a file or directory inside root."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ValidationFailed(
            f"{rel} is a symbolic link that points to nothing.", code="unsafe_path"
        ) from exc
    if not target.is_relative_to(root_real):
        raise ValidationFailed(
            f"{rel} is a symbolic link to {target}, outside the directory.", code="unsafe_path"
        )
    mode = target.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValidationFailed(
            f"{rel} links to a device, fifo or socket, not a regular file.", code="unsafe_path"
        )
    return mode


def list_files(root: Path) -> list[str]:
    """Sorted relative POSIX paths of every regular file under root; no links or devices.

    Nothing is skipped, so what is listed (and later hashed or served) is exactly what is there.
    """
    return _scan(root, allow_internal_symlinks=False)


def _read_json_object(path: Path, label: str) -> dict[str, Any]:
    """A small JSON file that must hold an object; capped so a huge file cannot exhaust memory."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(
            f"{label} could not be read: {exc.strerror or exc}.", code="bad_config"
        ) from exc
    if len(raw) > _MAX_JSON_BYTES:
        raise ValidationFailed(
            f"{label} is larger than {_MAX_JSON_BYTES} bytes.", code="bad_config"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed(
            f"{label} is not valid UTF-8 JSON: {exc}.", code="bad_config"
        ) from exc
    if not isinstance(data, dict):
        raise ValidationFailed(f"{label} must hold a JSON object.", code="bad_config")
    return data


def _config_int(config: dict[str, Any], *keys: str) -> int | None:
    """The first positive int among keys, also looking in ``text_config`` (multimodal configs)."""
    scopes = [config]
    if isinstance(config.get("text_config"), dict):
        scopes.append(config["text_config"])
    for scope in scopes:
        for key in keys:
            value = scope.get(key)
            if _is_int(value) and value > 0:
                return int(value)
    return None


def inspect_model_dir(path: Path) -> ModelFacts:
    """Facts about a base model directory; refuses directories the engine could not load safely.

    Weights must be safetensors: pickle formats (``.bin``) can run code when loaded.
    """
    files = _scan(path, allow_internal_symlinks=True)
    if "config.json" not in files:
        raise ValidationFailed(
            f"The model directory {path.name!r} has no config.json.", code="missing_file"
        )
    config = _read_json_object(path / "config.json", "config.json")

    weights = [f for f in files if f.endswith(".safetensors")]
    if not weights:
        pickles = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
        if pickles:
            detail = (
                f"The model directory {path.name!r} holds only pickle-format weights "
                f"({', '.join(pickles[:3])}); "
                "convert them to *.safetensors, because loading pickles can run code."
            )
        else:
            detail = f"The model directory {path.name!r} holds no *.safetensors weight files."
        raise ValidationFailed(detail, code="no_safetensors")

    if not any(name in files for name in _TOKENIZER_FILES):
        raise ValidationFailed(
            f"The model directory {path.name!r} has no tokenizer: expected one of "
            f"{', '.join(_TOKENIZER_FILES)}.",
            code="missing_tokenizer",
        )

    parameter_count = 0
    for rel in weights:
        header = read_safetensors_header(path / rel)
        parameter_count += sum(info.numel for info in header.values())

    architectures = config.get("architectures")
    architecture = ""
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        architecture = architectures[0]
    model_type = config.get("model_type")
    return ModelFacts(
        architecture=architecture,
        family=model_type if isinstance(model_type, str) else "",
        parameter_count=parameter_count,
        context_length=_config_int(config, "max_position_embeddings", "n_positions", "max_seq_len"),
        hidden_size=_config_int(config, "hidden_size", "n_embd", "d_model"),
        num_layers=_config_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        config=config,
    )


def _projection_shapes(base_config: dict[str, Any]) -> dict[str, tuple[str, int, int]]:
    """Module -> (block, in_features, out_features) of each Llama-style projection of the base."""

    def positive(key: str, default: int | None = None) -> int:
        value = base_config.get(key)
        if value is None and default is not None:
            return default
        if not _is_int(value) or value <= 0:
            raise ValidationFailed(
                f"The base model config has no usable {key} ({value!r}); "
                "the adapter cannot be checked against it.",
                code="unsupported_base",
            )
        return int(value)

    hidden = positive("hidden_size")
    heads = positive("num_attention_heads")
    kv_heads = positive("num_key_value_heads", heads)
    head_dim = positive("head_dim", hidden // heads or None)
    intermediate = positive("intermediate_size")
    q_out = heads * head_dim
    kv_out = kv_heads * head_dim
    return {
        "q_proj": ("self_attn", hidden, q_out),
        "k_proj": ("self_attn", hidden, kv_out),
        "v_proj": ("self_attn", hidden, kv_out),
        "o_proj": ("self_attn", q_out, hidden),
        "gate_proj": ("mlp", hidden, intermediate),
        "up_proj": ("mlp", hidden, intermediate),
        "down_proj": ("mlp", intermediate, hidden),
    }


def _bad_adapter_config(key: str, problem: str) -> ValidationFailed:
    return ValidationFailed(
        f"{_ADAPTER_CONFIG}: {key} {problem}.", code="bad_config", fields={key: [problem]}
    )


def _read_lora_config(path: Path) -> tuple[dict[str, Any], int, float, tuple[str, ...]]:
    """adapter_config.json with its rank, alpha and target modules, or a refusal saying why."""
    config = _read_json_object(path / _ADAPTER_CONFIG, _ADAPTER_CONFIG)
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ValidationFailed(
            f'{_ADAPTER_CONFIG} has peft_type {peft_type!r}; only LoRA adapters ("LORA") '
            "are supported.",
            code="not_lora",
        )
    if config.get("use_dora"):
        raise ValidationFailed(
            "DoRA adapters (use_dora: true) are not supported; train a plain LoRA adapter.",
            code="unsupported_adapter",
        )
    rank = config.get("r")
    if not _is_int(rank) or rank <= 0:
        raise _bad_adapter_config("r", f"must be a positive integer, not {rank!r}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise _bad_adapter_config("lora_alpha", f"must be a number, not {alpha!r}")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        raise _bad_adapter_config(
            "target_modules",
            f"must be an explicit list of module names, not the string {targets!r}",
        )
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, str) and t for t in targets)
    ):
        raise _bad_adapter_config(
            "target_modules", f"must be a non-empty list of module names, not {targets!r}"
        )
    if config.get("rank_pattern"):
        raise ValidationFailed(
            "Adapters with a per-module rank_pattern are not supported; use one rank r.",
            code="unsupported_adapter",
        )
    return config, int(rank), float(alpha), tuple(sorted(set(targets)))


def inspect_adapter_dir(path: Path, *, base_config: dict[str, Any]) -> AdapterFacts:
    """Facts about a LoRA adapter directory, refusing it unless every tensor fits the base model.

    Checking shapes here turns a confusing engine crash at load time into a clear upload error.
    """
    files = list_files(path)
    if _ADAPTER_CONFIG not in files:
        raise ValidationFailed(f"The adapter has no {_ADAPTER_CONFIG}.", code="missing_file")
    config, rank, alpha, targets = _read_lora_config(path)

    projections = _projection_shapes(base_config)
    for module in targets:
        if module not in projections:
            raise ValidationFailed(
                f"Target module {module!r} is not a projection of the base model; "
                f"supported: {', '.join(projections)}.",
                code="base_mismatch",
            )

    if _ADAPTER_WEIGHTS not in files:
        if "adapter_model.bin" in files:
            raise ValidationFailed(
                "The adapter holds only adapter_model.bin (pickle format); save it as "
                f"{_ADAPTER_WEIGHTS}, because loading pickles can run code.",
                code="no_safetensors",
            )
        raise ValidationFailed(f"The adapter has no {_ADAPTER_WEIGHTS}.", code="missing_file")
    tensors = read_safetensors_header(path / _ADAPTER_WEIGHTS)
    _check_lora_tensors(tensors, rank, targets, projections, base_config)

    base_name = config.get("base_model_name_or_path")
    return AdapterFacts(
        rank=rank,
        alpha=alpha,
        target_modules=targets,
        base_model_name_or_path=base_name if isinstance(base_name, str) and base_name else None,
        tensor_count=len(tensors),
    )


def _check_lora_tensors(
    tensors: dict[str, TensorInfo],
    rank: int,
    targets: tuple[str, ...],
    projections: dict[str, tuple[str, int, int]],
    base_config: dict[str, Any],
) -> None:
    """Every tensor must be a lora_A/lora_B of a targeted projection, shaped for the base."""
    num_layers = base_config.get("num_hidden_layers")
    if not _is_int(num_layers) or num_layers <= 0:
        raise ValidationFailed(
            f"The base model config has no usable num_hidden_layers ({num_layers!r}); "
            "the adapter cannot be checked against it.",
            code="unsupported_base",
        )
    if not tensors:
        raise ValidationFailed(f"{_ADAPTER_WEIGHTS} holds no tensors.", code="empty_adapter")

    seen: dict[tuple[int, str, str], set[str]] = {}
    for name in sorted(tensors):
        info = tensors[name]
        match = _LORA_KEY.fullmatch(name)
        if match is None:
            raise ValidationFailed(
                f"Unexpected tensor {name!r} in {_ADAPTER_WEIGHTS}: only "
                "base_model.model.model.layers.N.{self_attn|mlp}.MODULE.lora_{A|B}.weight "
                "tensors are accepted.",
                code="unexpected_tensor",
            )
        layer, block, module, which = int(match[1]), match[2], match[3], match[4]
        if module not in projections:
            raise ValidationFailed(
                f"Tensor {name!r} adapts {module!r}, which is not a projection of the base model.",
                code="base_mismatch",
            )
        expected_block, in_features, out_features = projections[module]
        if block != expected_block:
            raise ValidationFailed(
                f"Tensor {name!r} puts {module} under {block}; the base has it under "
                f"{expected_block}.",
                code="base_mismatch",
            )
        if layer >= num_layers:
            raise ValidationFailed(
                f"Tensor {name!r} is for layer {layer}, but the base model has only "
                f"{num_layers} layers (0-{num_layers - 1}).",
                code="base_mismatch",
            )
        if module not in targets:
            raise ValidationFailed(
                f"Tensor {name!r} adapts {module}, which is not in target_modules "
                f"({', '.join(targets)}).",
                code="unexpected_tensor",
            )
        if info.dtype not in _FLOAT_DTYPES:
            raise ValidationFailed(
                f"Tensor {name!r} has dtype {info.dtype}; LoRA weights must be one of "
                f"{', '.join(sorted(_FLOAT_DTYPES))}.",
                code="unsupported_dtype",
            )
        if which == "A":
            expected = (rank, in_features)
            why = f"(r={rank}, in_features={in_features})"
        else:
            expected = (out_features, rank)
            why = f"(out_features={out_features}, r={rank})"
        if info.shape != expected:
            raise ValidationFailed(
                f"Tensor {name!r} has shape {list(info.shape)}, expected {list(expected)} {why}.",
                code="shape_mismatch",
            )
        seen.setdefault((layer, block, module), set()).add(which)

    for (layer, block, module), halves in sorted(seen.items()):
        if halves != {"A", "B"}:
            have, missing = ("A", "B") if "A" in halves else ("B", "A")
            raise ValidationFailed(
                f"Tensor base_model.model.model.layers.{layer}.{block}.{module}.lora_{missing}"
                f".weight is missing; lora_{have} cannot be used without it.",
                code="missing_tensor",
            )
