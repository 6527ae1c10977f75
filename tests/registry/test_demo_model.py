"""The generated demo model and adapters (registry.demo) and the make_demo_model command: files the
registry and the engine accept, the same bytes every time, and an import and approval by the
system actor that a second run leaves alone."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import statistics
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from tokenizers import Tokenizer

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.celery import app as celery_app
from appliance.core.actors import system_actor
from appliance.core.models import Job
from appliance.registry import services
from appliance.registry.demo import (
    CHAT_TEMPLATE,
    write_demo_adapter,
    write_demo_model,
)
from appliance.registry.inspection import (
    TensorInfo,
    inspect_adapter_dir,
    inspect_model_dir,
    read_safetensors_header,
)
from appliance.registry.management.commands.make_demo_model import jobs_in_process
from appliance.registry.models import Adapter, Artifact, BaseModel
from appliance.registry.services import model_import
from tests.conftest import actor
from tests.support import blob_files

VOCAB = 512
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
PROJECTION = 4 * 32  # heads x head_dim, for queries and (4 KV heads) keys and values
RANK = 8


def expected_model_tensors() -> dict[str, TensorInfo]:
    """Hugging Face LlamaForCausalLM's weight names for the demo shape, spelled out by hand."""
    tensors = {
        "model.embed_tokens.weight": (VOCAB, HIDDEN),
        "model.norm.weight": (HIDDEN,),
        "lm_head.weight": (VOCAB, HIDDEN),
    }
    for i in range(LAYERS):
        tensors |= {
            f"model.layers.{i}.self_attn.q_proj.weight": (PROJECTION, HIDDEN),
            f"model.layers.{i}.self_attn.k_proj.weight": (PROJECTION, HIDDEN),
            f"model.layers.{i}.self_attn.v_proj.weight": (PROJECTION, HIDDEN),
            f"model.layers.{i}.self_attn.o_proj.weight": (HIDDEN, PROJECTION),
            f"model.layers.{i}.mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            f"model.layers.{i}.mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            f"model.layers.{i}.mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
            f"model.layers.{i}.input_layernorm.weight": (HIDDEN,),
            f"model.layers.{i}.post_attention_layernorm.weight": (HIDDEN,),
        }
    return {name: TensorInfo(dtype="BF16", shape=shape) for name, shape in tensors.items()}


def expected_adapter_tensors() -> dict[str, TensorInfo]:
    tensors = {}
    for i in range(LAYERS):
        for module in ("q_proj", "v_proj"):
            stem = f"base_model.model.model.layers.{i}.self_attn.{module}"
            tensors[f"{stem}.lora_A.weight"] = TensorInfo("BF16", (RANK, HIDDEN))
            tensors[f"{stem}.lora_B.weight"] = TensorInfo("BF16", (PROJECTION, RANK))
    return tensors


def read_bf16(path: Path, name: str) -> list[float]:
    """One tensor's values, decoded independently of the writer (bf16 = upper half of f32)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + header_len])[name]["data_offsets"]
    data = raw[8 + header_len + begin : 8 + header_len + end]
    return [struct.unpack("<f", b"\0\0" + data[i : i + 2])[0] for i in range(0, len(data), 2)]


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*")}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model and both adapters, generated once for the file-level tests."""
    root = tmp_path_factory.mktemp("demo")
    write_demo_model(root / "demo-llama")
    write_demo_adapter(root / "demo-triage", base_name="demo-llama", seed=101)
    write_demo_adapter(root / "demo-billing", base_name="demo-llama", seed=202)
    return root


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- the generated files -----------------------------------------------------------------------


def test_demo_model_passes_the_registry_inspection(demo_dir: Path) -> None:
    facts = inspect_model_dir(demo_dir / "demo-llama")

    assert (facts.architecture, facts.family) == ("LlamaForCausalLM", "llama")
    assert facts.parameter_count == sum(t.numel for t in expected_model_tensors().values())
    assert (facts.hidden_size, facts.num_layers, facts.context_length) == (HIDDEN, LAYERS, 1024)


def test_demo_adapters_pass_the_registry_inspection_against_the_demo_model(
    demo_dir: Path,
) -> None:
    base_config = load_json(demo_dir / "demo-llama" / "config.json")
    for name in ("demo-triage", "demo-billing"):
        facts = inspect_adapter_dir(demo_dir / name, base_config=base_config)

        assert (facts.rank, facts.alpha) == (RANK, 16.0)
        assert facts.target_modules == ("q_proj", "v_proj")
        assert facts.base_model_name_or_path == "demo-llama"
        assert facts.tensor_count == 2 * LAYERS * 2


def test_demo_model_weights_have_exactly_the_llama_names_shapes_and_dtype(demo_dir: Path) -> None:
    header = read_safetensors_header(demo_dir / "demo-llama" / "model.safetensors")

    assert header == expected_model_tensors()


def test_demo_model_config_matches_its_weights_and_tokenizer(demo_dir: Path) -> None:
    directory = demo_dir / "demo-llama"
    config = load_json(directory / "config.json")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

    assert config["torch_dtype"] == "bfloat16"  # the weights are BF16
    assert config["vocab_size"] == tokenizer.get_vocab_size() == VOCAB
    assert config["head_dim"] == 32  # the CPU engine's attention crashes with 16
    assert config["num_attention_heads"] * config["head_dim"] == PROJECTION
    assert config["tie_word_embeddings"] is False  # lm_head is stored separately
    assert config["bos_token_id"] == tokenizer.token_to_id("<|bos|>")
    assert config["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert config["pad_token_id"] == tokenizer.token_to_id("<|pad|>")
    generation = load_json(directory / "generation_config.json")
    assert generation["eos_token_id"] == config["eos_token_id"]


def test_demo_model_norms_are_ones_and_projections_are_small_noise(demo_dir: Path) -> None:
    weights = demo_dir / "demo-llama" / "model.safetensors"

    assert set(read_bf16(weights, "model.layers.1.post_attention_layernorm.weight")) == {1.0}
    values = read_bf16(weights, "model.layers.0.self_attn.q_proj.weight")
    assert max(abs(v) for v in values) <= 0.02 * math.sqrt(3)
    assert 0.015 < statistics.pstdev(values) < 0.025
    assert len(set(values)) > 100


def test_demo_adapter_weights_have_exactly_the_peft_names_shapes_and_dtype(
    demo_dir: Path,
) -> None:
    for name in ("demo-triage", "demo-billing"):
        header = read_safetensors_header(demo_dir / name / "adapter_model.safetensors")
        config = load_json(demo_dir / name / "adapter_config.json")

        assert header == expected_adapter_tensors()
        assert config["peft_type"] == "LORA"
        assert config["task_type"] == "CAUSAL_LM"
        assert config["bias"] == "none"
        assert (config["r"], config["lora_alpha"]) == (RANK, 16)


def test_demo_adapter_lora_b_is_not_zero_so_the_adapter_changes_the_output(
    demo_dir: Path,
) -> None:
    weights = demo_dir / "demo-triage" / "adapter_model.safetensors"
    values = read_bf16(weights, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")

    assert any(v != 0.0 for v in values)


def test_demo_tokenizer_loads_and_round_trips_text(demo_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(demo_dir / "demo-llama" / "tokenizer.json"))
    text = "The patient's invoice: 59,90 € — Überweisung fällig."  # partly outside the corpus

    encoding = tokenizer.encode(text)

    assert encoding.ids[0] == tokenizer.token_to_id("<|bos|>")
    assert tokenizer.decode(encoding.ids) == text
    assert len(tokenizer.encode("The patient reports chest pain").ids) < len(
        "The patient reports chest pain"
    )  # trained merges, not just bytes


def test_demo_tokenizer_config_names_special_tokens_that_exist(demo_dir: Path) -> None:
    directory = demo_dir / "demo-llama"
    config = load_json(directory / "tokenizer_config.json")
    special = load_json(directory / "special_tokens_map.json")
    vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab()

    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_max_length"] == 1024
    for key in ("bos_token", "eos_token", "pad_token"):
        assert config[key] == special[key]
        assert config[key] in vocab
    for token_id, token in config["added_tokens_decoder"].items():
        assert vocab[token["content"]] == int(token_id)


def test_demo_chat_template_formats_each_turn_and_honours_add_generation_prompt(
    demo_dir: Path,
) -> None:
    template = load_json(demo_dir / "demo-llama" / "tokenizer_config.json")["chat_template"]

    assert template == CHAT_TEMPLATE
    for part in ("bos_token", "for message in messages", "message['role']", "message['content']"):
        assert part in template
    assert "{% if add_generation_prompt %}" in template
    assert "<|im_end|>" in template  # each turn ends with the EOS token, so generation stops
    # jinja2 comes with the engine extra (vllm), not with the appliance; render where it is.
    if importlib.util.find_spec("jinja2") is not None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Chest pain?"},
        ]
        render = env.from_string(template).render
        turns = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nChest pain?<|im_end|>\n"
        assert render(messages=messages, bos_token="<|bos|>", add_generation_prompt=True) == (
            "<|bos|>" + turns + "<|im_start|>assistant\n"
        )
        assert render(messages=messages, bos_token="<|bos|>", add_generation_prompt=False) == (
            "<|bos|>" + turns
        )


def test_demo_generation_writes_the_same_bytes_every_time(tmp_path: Path, demo_dir: Path) -> None:
    write_demo_model(tmp_path / "demo-llama")
    write_demo_adapter(tmp_path / "demo-triage", base_name="demo-llama", seed=101)

    assert file_bytes(tmp_path / "demo-llama") == file_bytes(demo_dir / "demo-llama")
    assert file_bytes(tmp_path / "demo-triage") == file_bytes(demo_dir / "demo-triage")


def test_demo_adapters_with_different_seeds_have_different_weights(demo_dir: Path) -> None:
    triage = (demo_dir / "demo-triage" / "adapter_model.safetensors").read_bytes()
    billing = (demo_dir / "demo-billing" / "adapter_model.safetensors").read_bytes()

    assert triage != billing
    assert len(triage) == len(billing)


# --- make_demo_model ---------------------------------------------------------------------------


def registry_snapshot() -> dict[str, Any]:
    return {
        "models": list(BaseModel.objects.values_list("pk", "name", "status", "artifact_id")),
        "adapters": list(Adapter.objects.values_list("pk", "name", "status", "artifact_id")),
        "artifacts": list(Artifact.objects.values_list("pk", "digest")),
        "jobs": Job.objects.count(),
        "audit": AuditEvent.objects.count(),
        "blobs": blob_files(),
    }


@pytest.fixture
def broker_mode() -> Iterator[None]:
    """Jobs go to a broker, as with REDIS_URL: nothing runs in process unless forced to."""
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = True  # what tests/conftest.py sets for every test


def broken_store() -> Any:
    """Stands in for the artifact store when the disk fails: every import job then fails."""
    raise OSError("disk full")


def run_command() -> str:
    out = io.StringIO()
    call_command("make_demo_model", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_make_demo_model_imports_and_approves_the_model_and_two_adapters(
    import_root: Path,
) -> None:
    output = run_command()

    model = BaseModel.objects.get(name="demo-llama")
    assert (model.status, model.storage) == ("approved", "copy")
    assert (model.imported_by, model.approved_by) == (None, None)  # the appliance, not a person
    assert model.approved_at is not None
    assert model.source_path == str((import_root / "demo" / "demo-llama").resolve())
    assert model.artifact is not None
    adapters = {a.name: a for a in Adapter.objects.all()}
    assert set(adapters) == {"demo-triage", "demo-billing"}
    for adapter in adapters.values():
        assert (adapter.status, adapter.base_model, adapter.rank) == ("approved", model, RANK)
        assert adapter.artifact is not None
        assert adapter.artifact.digest in output
    assert adapters["demo-triage"].artifact != adapters["demo-billing"].artifact
    assert f"model {model.pk} demo-llama: approved, sha256:{model.artifact.digest}" in output
    assert set(Job.objects.values_list("status", flat=True)) == {"succeeded"}
    # Six model files and two adapter weights; both adapters' configs are the same blob.
    assert len(blob_files()) == 9


@pytest.mark.django_db
def test_make_demo_model_records_every_step_as_the_system_actor() -> None:
    run_command()

    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.action for e in events] == [
        "model.import",
        "model.import_complete",
        "model.approve",
        "adapter.import",
        "adapter.import_complete",
        "adapter.approve",
        "adapter.import",
        "adapter.import_complete",
        "adapter.approve",
    ]
    assert {(e.actor_kind, e.actor_id) for e in events} == {("system", "system")}
    approvals = [e for e in events if e.action.endswith(".approve")]
    assert {e.actor_label for e in approvals} == {"demo"}
    assert [e.details["name"] for e in approvals] == ["demo-llama", "demo-triage", "demo-billing"]
    assert {e.outcome for e in events} == {"success"}


@pytest.mark.django_db
def test_make_demo_model_a_second_time_changes_nothing() -> None:
    run_command()
    before = registry_snapshot()

    output = run_command()

    assert registry_snapshot() == before
    assert "already imported and approved" in output
    assert "demo-llama" in output
    assert "demo-billing" in output


@pytest.mark.django_db
def test_make_demo_model_finishes_an_interrupted_run(import_root: Path) -> None:
    write_demo_model(import_root / "demo" / "demo-llama")
    model, job = model_import(
        actor=system_actor("demo"), name="demo-llama", path=str(import_root / "demo/demo-llama")
    )
    services.entry_ingest(job_id=str(job.pk))  # imported and hashed, but never approved

    run_command()

    model.refresh_from_db()
    assert model.status == "approved"
    assert BaseModel.objects.count() == 1
    assert set(Adapter.objects.values_list("status", flat=True)) == {"approved"}


@pytest.mark.django_db
def test_make_demo_model_leaves_a_persons_pending_import_to_an_administrator(
    import_root: Path, operator: User
) -> None:
    write_demo_model(import_root / "elsewhere")
    _, job = model_import(
        actor=actor(operator), name="demo-llama", path=str(import_root / "elsewhere")
    )
    services.entry_ingest(job_id=str(job.pk))
    before = registry_snapshot()

    with pytest.raises(CommandError, match="needs an administrator's approval"):
        run_command()

    assert registry_snapshot() == before


@pytest.mark.django_db
def test_make_demo_model_fails_with_the_reason_when_an_import_job_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services, "artifact_store", broken_store)

    with pytest.raises(CommandError, match=r"Importing 'demo-llama' failed \(job .+\): OSError\."):
        run_command()

    assert list(BaseModel.objects.values_list("status", flat=True)) == ["failed"]
    assert not Adapter.objects.exists()
    assert not AuditEvent.objects.filter(action__endswith=".approve").exists()


@pytest.mark.django_db
def test_make_demo_model_stops_when_a_demo_name_is_held_by_a_failed_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(services, "artifact_store", broken_store)
        with pytest.raises(CommandError):
            run_command()
    before = registry_snapshot()

    with pytest.raises(CommandError, match="named 'demo-llama' that is failed"):
        run_command()

    assert registry_snapshot() == before


@pytest.mark.django_db
def test_make_demo_model_runs_imports_itself_when_jobs_would_go_to_a_broker(
    broker_mode: None,
) -> None:
    run_command()

    assert Counter(BaseModel.objects.values_list("status", flat=True)) == {"approved": 1}
    assert Counter(Adapter.objects.values_list("status", flat=True)) == {"approved": 2}
    assert celery_app.conf.task_always_eager is False  # restored afterwards


@pytest.mark.django_db
def test_jobs_queued_in_process_run_here_even_with_a_broker(
    broker_mode: None, import_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    write_demo_model(import_root / "m")

    with jobs_in_process(), django_capture_on_commit_callbacks(execute=True):
        model, _ = model_import(actor=system_actor("demo"), name="m", path=str(import_root / "m"))

    model.refresh_from_db()
    assert model.status == "pending"
    assert celery_app.conf.task_always_eager is False
