"""How engines are started: the vLLM command line, its privacy environment, and real processes
(a fake ``python`` stands in for vLLM) for the API key, the logs, failures and stopping."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from appliance.agent.engines import (
    CLOSED_PORT_URL,
    EngineProcess,
    EngineRuntime,
    engine_command,
    engine_environment,
)

API_KEY = "eng_0123456789abcdef-secret"
PORT = 18123


def spec(device: str = "gpu", **settings: Any) -> dict[str, Any]:
    return {
        "instance": "7f9c0a52-0000-4000-8000-000000000001",
        "deployment": "chat",
        "replica": 0,
        "device": device,
        "gpu_indices": [2, 3] if device == "gpu" else [],
        "model": {"name": "llama", "digest": "a" * 64, "files": []},
        "adapters": [],
        "settings": {
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.85,
            "tensor_parallel_size": 2,
            "dtype": "bfloat16",
            "quantization": "",
            "max_loras": 4,
            "max_lora_rank": 16,
            **settings,
        },
        "api_key": API_KEY,
    }


def command_for(
    desired: dict[str, Any],
    runtime: EngineRuntime | None = None,
    adapter_dirs: dict[str, Path] | None = None,
) -> list[str]:
    return engine_command(
        runtime or EngineRuntime(python="/opt/engine/bin/python"),
        spec=desired,
        model_dir=Path("/cache/artifacts/model"),
        adapter_dirs=adapter_dirs or {},
        port=PORT,
    )


def option(command: list[str], name: str) -> str:
    assert command.count(name) == 1, f"{name} must appear once in {command}"
    return command[command.index(name) + 1]


# -- the environment ------------------------------------------------------------------------


@pytest.fixture
def our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's own environment, with variables that must not reach an engine."""
    monkeypatch.setenv("APPLIANCE_SECRET_KEY", "django-secret")
    monkeypatch.setenv("APPLIANCE_ENROLLMENT_TOKEN", "enr_token")
    monkeypatch.setenv("DATABASE_URL", "postgres://appliance:pw@db/appliance")
    monkeypatch.setenv("DATABASE_URL_FILE", "/run/secrets/db")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "appliance.settings")
    monkeypatch.setenv("DJANGO_DEBUG", "True")
    monkeypatch.setenv("KEEP_ME", "yes")
    # An operator's environment that would switch telemetry or debug logging back on.
    monkeypatch.setenv("VLLM_NO_USAGE_STATS", "0")
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    monkeypatch.setenv("VLLM_USAGE_STATS_SERVER", "https://stats.vllm.ai")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")


@pytest.mark.usefixtures("our_environment")
@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_environment_turns_telemetry_off_exactly_as_vllm_expects(device: str) -> None:
    env = engine_environment(EngineRuntime(), device=device, gpu_indices=[0])

    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_USAGE_STATS_SERVER"] == CLOSED_PORT_URL


def test_usage_stats_server_is_a_closed_loopback_port() -> None:
    url = urlsplit(CLOSED_PORT_URL)
    assert url.hostname == "127.0.0.1"
    assert url.port is not None

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        assert sock.connect_ex((url.hostname, url.port)) != 0, "something listens there"


@pytest.mark.usefixtures("our_environment")
def test_environment_enables_runtime_lora_and_never_debug_logging() -> None:
    env = engine_environment(EngineRuntime(), device="gpu", gpu_indices=[0])

    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"


@pytest.mark.usefixtures("our_environment")
def test_environment_scrubs_the_appliances_own_variables() -> None:
    env = engine_environment(EngineRuntime(), device="gpu", gpu_indices=[0])

    leaked = [
        k for k in env if k.startswith(("APPLIANCE_", "DJANGO_", "DATABASE_URL", "REDIS_URL"))
    ]
    assert leaked == []
    assert env["KEEP_ME"] == "yes"  # everything else (PATH, locale, ...) is inherited
    assert env["PATH"] == os.environ["PATH"]


def test_environment_keeps_engine_caches_in_the_engine_home(tmp_path: Path) -> None:
    runtime = EngineRuntime(home=tmp_path / "engine-home")

    env = engine_environment(runtime, device="cpu", gpu_indices=[])

    for name in ("HF_HOME", "VLLM_CACHE_ROOT", "XDG_CACHE_HOME"):
        assert Path(env[name]).is_relative_to(runtime.home), name


def test_cpu_engine_gets_a_small_kv_cache_and_no_visible_gpus() -> None:
    env = engine_environment(EngineRuntime(cpu_kv_cache_gib=3), device="cpu", gpu_indices=[0])

    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_gpu_engine_sees_exactly_its_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")

    env = engine_environment(EngineRuntime(), device="gpu", gpu_indices=[2, 5])

    assert env["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


# -- the command line -----------------------------------------------------------------------


def test_command_runs_the_configured_server_module_with_the_configured_python() -> None:
    runtime = EngineRuntime(python="/opt/engine/bin/python", module="vllm.some.server")

    command = command_for(spec(), runtime)

    assert command[:3] == ["/opt/engine/bin/python", "-m", "vllm.some.server"]
    assert option(command, "--model") == "/cache/artifacts/model"
    assert option(command, "--served-model-name") == "chat"
    assert option(command, "--port") == str(PORT)


def test_command_binds_to_loopback_by_default() -> None:
    assert EngineRuntime().host == "127.0.0.1"
    assert option(command_for(spec(), EngineRuntime()), "--host") == "127.0.0.1"


def test_command_binds_to_the_configured_private_address() -> None:
    command = command_for(spec(), EngineRuntime(host="10.1.2.3"))

    assert option(command, "--host") == "10.1.2.3"


def test_command_enables_lora_with_the_deployments_limits() -> None:
    command = command_for(spec(max_loras=6, max_lora_rank=32))

    assert "--enable-lora" in command
    assert option(command, "--max-loras") == "6"
    assert option(command, "--max-lora-rank") == "32"


def test_command_of_an_embedding_model_has_no_lora_options() -> None:
    command = command_for(spec("cpu", enable_lora=False))

    assert not [arg for arg in command if "lora" in arg]
    assert option(command, "--served-model-name") == "chat"


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_command_never_logs_requests_or_runs_at_debug(device: str) -> None:
    command = command_for(spec(device), adapter_dirs={"legal": Path("/a/legal")})

    assert "--enable-log-requests" not in command
    assert not [arg for arg in command if "debug" in arg.lower() or "trace" in arg.lower()]
    assert option(command, "--uvicorn-log-level") == "warning"


def test_command_does_not_carry_the_api_key() -> None:
    command = command_for(spec())

    assert "--api-key" not in command
    assert not [arg for arg in command if API_KEY in arg]


def test_gpu_command_sets_tensor_parallelism_and_memory_utilization() -> None:
    command = command_for(spec("gpu", tensor_parallel_size=2, gpu_memory_utilization=0.85))

    assert option(command, "--tensor-parallel-size") == "2"
    assert option(command, "--gpu-memory-utilization") == "0.85"
    assert option(command, "--dtype") == "bfloat16"


def test_cpu_command_has_no_gpu_options() -> None:
    command = command_for(spec("cpu"))

    assert "--tensor-parallel-size" not in command
    assert "--gpu-memory-utilization" not in command


def test_optional_settings_are_left_out_when_unset() -> None:
    command = command_for(spec(max_model_len=None, quantization=""))

    assert "--max-model-len" not in command
    assert "--quantization" not in command


def test_optional_settings_are_passed_when_set() -> None:
    command = command_for(spec(max_model_len=2048, quantization="awq"))

    assert option(command, "--max-model-len") == "2048"
    assert option(command, "--quantization") == "awq"


def test_start_up_adapters_are_passed_as_lora_modules_in_name_order() -> None:
    adapters = {"medical": Path("/c/medical"), "legal": Path("/c/legal")}

    command = command_for(spec(), adapter_dirs=adapters)

    start = command.index("--lora-modules")
    assert command[start + 1 :] == ["legal=/c/legal", "medical=/c/medical"]


def test_no_lora_modules_without_start_up_adapters() -> None:
    assert "--lora-modules" not in command_for(spec(), adapter_dirs={})


# -- real processes, with a fake python ------------------------------------------------------


def fake_python(directory: Path, body: str, interpreter: str = f"{sys.executable} -S") -> Path:
    """An executable that vLLM's command line can be run with: ``body`` run by ``interpreter``."""
    path = directory / "fake-python"
    path.write_text(f"#!{interpreter}\n{body}")
    path.chmod(0o755)
    return path


def runtime_for(tmp_path: Path, python: Path) -> EngineRuntime:
    return EngineRuntime(
        python=str(python),
        module="vllm.entrypoints.openai.api_server",
        log_dir=tmp_path / "logs",
        home=tmp_path / "engine-home",
    )


def start(runtime: EngineRuntime, desired: dict[str, Any] | None = None) -> EngineProcess:
    return EngineProcess.start(
        runtime,
        spec=desired or spec("cpu"),
        model_dir=Path("/cache/artifacts/model"),
        adapter_dirs={"legal": Path("/cache/artifacts/legal")},
        port=PORT,
    )


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


DUMP = """import json, os, sys
with open(sys.argv[0] + ".json", "w") as out:
    json.dump({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}, out)
"""


@pytest.fixture
def dumped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What a started engine saw: its argv, environment and working directory."""
    monkeypatch.setenv("APPLIANCE_SECRET_KEY", "django-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://appliance:pw@db/appliance")
    monkeypatch.setenv("VLLM_API_KEY", "not-this-one")
    python = fake_python(tmp_path, DUMP)
    runtime = runtime_for(tmp_path, python)

    engine = start(runtime)

    assert engine.process.wait(timeout=20) == 0
    seen: dict[str, Any] = json.loads(Path(f"{python}.json").read_text())
    seen["runtime"] = runtime
    return seen


def test_started_engine_gets_its_api_key_in_the_environment_not_argv(
    dumped: dict[str, Any],
) -> None:
    assert dumped["env"]["VLLM_API_KEY"] == API_KEY
    assert not [arg for arg in dumped["argv"] if API_KEY in arg]
    assert "--api-key" not in dumped["argv"]


def test_started_engine_runs_the_command_line_with_privacy_environment(
    dumped: dict[str, Any],
) -> None:
    env = dumped["env"]
    assert dumped["argv"][1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert option(dumped["argv"], "--host") == "127.0.0.1"
    assert option(dumped["argv"], "--lora-modules") == "legal=/cache/artifacts/legal"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "APPLIANCE_SECRET_KEY" not in env
    assert "DATABASE_URL" not in env


def test_started_engine_runs_in_its_private_home(dumped: dict[str, Any]) -> None:
    home: Path = dumped["runtime"].home
    assert Path(dumped["cwd"]) == home.resolve()
    for sub in ("hf", "vllm", "cache"):
        assert stat.S_IMODE((home / sub).stat().st_mode) == 0o700


def test_engine_output_goes_to_its_log_file_and_failure_reports_code_and_last_lines(
    tmp_path: Path,
) -> None:
    python = fake_python(
        tmp_path,
        'i=0; while [ $i -lt 40 ]; do echo "line $i: 100% done"; i=$((i+1)); done\n'
        "echo 'CUDA out of memory' >&2\nexit 3\n",
        interpreter="/bin/sh",
    )
    runtime = runtime_for(tmp_path, python)
    desired = spec("cpu")

    engine = start(runtime, desired)
    engine.process.wait(timeout=20)
    failure = engine.failure()

    assert engine.poll() == 3
    assert failure.splitlines()[0] == "engine exited with code 3"
    assert failure.splitlines()[-1] == "CUDA out of memory"  # stderr is captured too
    assert "line 39: 100% done" in failure
    assert "line 0:" not in failure  # only the last lines
    log = (runtime.log_dir / f"engine-{desired['instance']}.log").read_text().splitlines()
    assert log[0] == "line 0: 100% done"
    assert len(log) == 41
    assert log[-1] == "CUDA out of memory"


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its (new) parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rpartition(")")[2].split()[0] == "Z"


def test_stop_kills_the_engine_and_the_workers_it_spawned(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    # The worker ignores SIGTERM, like a busy vLLM worker: only the group's SIGKILL ends it.
    python = fake_python(
        tmp_path,
        f'sh -c \'trap "" TERM; echo $$ > {child_pid_file}.tmp; '
        f"mv {child_pid_file}.tmp {child_pid_file}; exec sleep 300' &\n"
        "trap 'exit 0' TERM\n"
        "while true; do sleep 1; done\n",
        interpreter="/bin/sh",
    )
    engine = start(runtime_for(tmp_path, python))
    try:
        wait_until(child_pid_file.exists)
        child = int(child_pid_file.read_text())
        assert not _gone(child)
        assert engine.poll() is None

        engine.stop(grace_seconds=5)

        assert engine.poll() is not None
        wait_until(lambda: _gone(child), seconds=5)
    finally:  # never leave a sleeping process behind, whatever failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.pid, signal.SIGKILL)
        engine.process.wait(timeout=5)


def test_inherited_vllm_and_hub_settings_do_not_reach_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")  # would open unauthenticated dev routes
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/tmp/debug-logging.json")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "debug")

    env = engine_environment(EngineRuntime(), device="gpu", gpu_indices=[1, 0])

    for name in (
        "VLLM_SERVER_DEV_MODE",
        "VLLM_LOGGING_CONFIG_PATH",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "TRANSFORMERS_VERBOSITY",
    ):
        assert name not in env
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the NVML numbering placement used
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0"
