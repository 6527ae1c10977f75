"""The agent's loop against a mock control plane, a fake clock and fake engine processes:
downloads and verification, start and readiness, crashes and backoff, runtime adapters, restarts,
outages of the control plane and revocation, and what the heartbeat reports."""

from __future__ import annotations

import hashlib
import json
import stat
from concurrent.futures import Executor, Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.agent import runner
from appliance.agent.cache import ArtifactCache
from appliance.agent.engines import EngineRuntime
from appliance.agent.nvml import GpuSample, HostGpus
from appliance.agent.runner import Agent, ManagedEngine, NodeRefused

CREDENTIAL = "nod_node-credential-secret"
ENGINE_KEY = "eng_engine-key"
SERVER = "https://control.example"
HEARTBEAT = "/api/agent/v1/heartbeat"
BLOBS = "/api/agent/v1/blobs/"
BACKOFF_BASE = 2.0  # Backoff's first delay


def artifact(name: str, files: dict[str, bytes]) -> dict[str, Any]:
    refs = [
        {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        for path, content in sorted(files.items())
    ]
    digest = hashlib.sha256(json.dumps(refs, sort_keys=True).encode()).hexdigest()
    return {"name": name, "digest": digest, "files": refs}


MODEL_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"\x00weights" * 512,
}
ADAPTER_FILES = {
    name: {
        "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8, "name": name}).encode(),
        "adapter_model.safetensors": name.encode() * 256,
    }
    for name in ("legal", "medical")
}
MODEL = artifact("tiny-llama", MODEL_FILES)
ADAPTERS = {name: artifact(name, files) for name, files in ADAPTER_FILES.items()}
CONTENT = {
    hashlib.sha256(content).hexdigest(): content
    for files in (MODEL_FILES, *ADAPTER_FILES.values())
    for content in files.values()
}


def sha_of(files: dict[str, bytes], path: str) -> str:
    return hashlib.sha256(files[path]).hexdigest()


def desired(
    instance: str = "i-1", adapters: tuple[str, ...] = ("legal",), **settings: Any
) -> dict[str, Any]:
    return {
        "instance": instance,
        "deployment": f"chat-{instance}",
        "replica": 0,
        "device": "cpu",
        "gpu_indices": [],
        "model": MODEL,
        "adapters": [ADAPTERS[name] for name in adapters],
        "settings": {
            "max_model_len": 2048,
            "gpu_memory_utilization": 0.9,
            "tensor_parallel_size": 1,
            "dtype": "auto",
            "quantization": "",
            "max_loras": 4,
            "max_lora_rank": 8,
            **settings,
        },
        "api_key": ENGINE_KEY,
    }


class ControlPlane:
    """The agent API over a MockTransport: heartbeats answered with ``engines``, blobs served."""

    def __init__(self) -> None:
        self.engines: list[dict[str, Any]] = []
        self.heartbeat_seconds = 10
        self.failure: str | None = None  # "connect", "503" or "401"
        self.heartbeat_attempts = 0
        self.requests: list[httpx.Request] = []
        self.blob_requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == HEARTBEAT:
            self.heartbeat_attempts += 1
        if self.failure == "connect":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.failure == "503":
            return httpx.Response(503, json={"code": "unavailable", "detail": "Restarting."})
        if self.failure == "401":
            return httpx.Response(401, json={"code": "revoked", "detail": "Node revoked."})
        self.requests.append(request)
        if request.method == "POST" and request.url.path == HEARTBEAT:
            return httpx.Response(
                200,
                json={
                    "node": {"id": 7, "name": "gpu-01", "status": "online"},
                    "heartbeat_seconds": self.heartbeat_seconds,
                    "engines": self.engines,
                },
            )
        if request.method == "GET" and request.url.path.startswith(BLOBS):
            sha256 = request.url.path.removeprefix(BLOBS)
            self.blob_requests.append(sha256)
            if sha256 in CONTENT:
                return httpx.Response(200, content=CONTENT[sha256])
        return httpx.Response(404, json={"code": "not_found", "detail": "No such thing."})

    @property
    def heartbeats(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == HEARTBEAT]

    @property
    def last_report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.heartbeats[-1].content)
        return report


class FakeEngine:
    """Stands in for EngineProcess: the test decides whether it is healthy or has exited."""

    def __init__(
        self,
        *,
        spec: dict[str, Any],
        model_dir: Path,
        adapter_dirs: dict[str, Path],
        port: int,
        pid: int,
    ) -> None:
        self.spec = spec
        self.model_dir = model_dir
        self.adapter_dirs = adapter_dirs
        self.port = port
        self.pid = pid
        self.exit_code: int | None = None
        self.is_healthy = False
        self.stopped = False
        self.load_refusal: str | None = None
        self.loads: list[tuple[str, Path]] = []
        self.unloads: list[str] = []
        self.tail = [
            "INFO Starting vLLM API server",
            "INFO Application startup complete." + "x" * 600,
        ]

    def poll(self) -> int | None:
        return self.exit_code

    def healthy(self) -> bool:
        return self.is_healthy and self.exit_code is None

    def metrics(self) -> dict[str, Any]:
        return {"num_requests_running": 2, "kv_cache_usage_perc": 0.25}

    def load_adapter(self, name: str, path: Path) -> str | None:
        self.loads.append((name, path))
        return self.load_refusal

    def unload_adapter(self, name: str) -> str | None:
        self.unloads.append(name)
        return None

    def stop(self, grace_seconds: float = 15.0) -> None:
        self.stopped = True
        self.exit_code = -15 if self.exit_code is None else self.exit_code

    def failure(self) -> str:
        return f"engine exited with code {self.exit_code}\nLoading weights\nCUDA out of memory"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gpu(index: int) -> GpuSample:
    values: dict[str, Any] = {f.name: None for f in fields(GpuSample)}
    values.update(
        index=index,
        uuid=f"GPU-{index}",
        name="NVIDIA H100 80GB HBM3",
        memory_total_bytes=80 * 2**30,
        throttle_reasons=(),
        processes=(),
    )
    return GpuSample(**values)


TWO_GPUS = HostGpus(
    driver_version="550.54", cuda_driver_version="12.4", gpus=(gpu(0), gpu(1)), error=None
)
NO_GPUS = HostGpus(
    driver_version=None,
    cuda_driver_version=None,
    gpus=(),
    error="NVML library not found (no NVIDIA driver installed)",
)


@dataclass
class Node:
    """An agent wired to the fakes, and the handles a test drives them with."""

    agent: Agent
    clock: FakeClock
    control_plane: ControlPlane
    started: list[FakeEngine]
    cache: ArtifactCache

    def tick(self, advance: float = 0.0) -> None:
        self.clock.now += advance
        self.agent.tick()

    def engine(self, instance: str = "i-1") -> ManagedEngine:
        return self.agent.engines[instance]

    def run_ready(self, *specs: dict[str, Any]) -> list[FakeEngine]:
        """Desire ``specs``, start them and let them become ready; the next heartbeat is due."""
        self.control_plane.engines = list(specs) or [desired()]
        self.tick(self.agent.interval)
        engines = self.started[-len(self.control_plane.engines) :]
        for engine in engines:
            engine.is_healthy = True
        self.tick(1)
        assert all(e.state == "ready" for e in self.agent.engines.values())
        self.tick()  # the state change is reported at once
        return engines


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    started: list[FakeEngine] = []

    def start(
        runtime: EngineRuntime,
        *,
        spec: dict[str, Any],
        model_dir: Path,
        adapter_dirs: dict[str, Path],
        port: int,
    ) -> FakeEngine:
        engine = FakeEngine(
            spec=spec,
            model_dir=model_dir,
            adapter_dirs=adapter_dirs,
            port=port,
            pid=4000 + len(started),
        )
        started.append(engine)
        return engine

    monkeypatch.setattr(runner.EngineProcess, "start", start)
    control_plane = ControlPlane()
    http = httpx.Client(
        base_url=SERVER,
        headers={"Authorization": f"Bearer {CREDENTIAL}"},
        transport=httpx.MockTransport(control_plane),
    )
    clock = FakeClock()
    cache = ArtifactCache(tmp_path / "cache")
    agent = Agent(
        http=http,
        runtime=EngineRuntime(
            python="/opt/engine/bin/python",
            module="vllm.entrypoints.openai.api_server",
            version="0.32.0",
            log_dir=tmp_path / "logs",
            home=tmp_path / "engine-home",
        ),
        cache=cache,
        gpus=lambda: TWO_GPUS,
        clock=clock,
        background=InlineExecutor(),
    )
    return Node(agent, clock, control_plane, started, cache)


class InlineExecutor(Executor):
    """Runs background work at once, so a test's tick sees it finished."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class NeverExecutor(Executor):
    """Background work that has not finished yet (a large model still downloading)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return Future()


# -- starting -------------------------------------------------------------------------------


def test_first_heartbeats_desired_engine_is_downloaded_verified_and_started(node: Node) -> None:
    node.control_plane.engines = [desired(adapters=("legal",))]

    node.tick()

    assert len(node.started) == 1
    engine = node.started[0]
    model_dir = node.cache.artifact_path(MODEL["digest"])
    legal_dir = node.cache.artifact_path(ADAPTERS["legal"]["digest"])
    assert engine.model_dir == model_dir
    assert engine.adapter_dirs == {"legal": legal_dir}
    for path, content in MODEL_FILES.items():
        assert (model_dir / path).read_bytes() == content
    for path, content in ADAPTER_FILES["legal"].items():
        assert (legal_dir / path).read_bytes() == content
    assert sorted(node.control_plane.blob_requests) == sorted(
        ref["sha256"] for ref in MODEL["files"] + ADAPTERS["legal"]["files"]
    )
    assert engine.spec == desired(adapters=("legal",))
    assert engine.port == node.engine().port
    assert node.engine().state == "starting"


def test_nothing_starts_before_the_control_plane_has_answered(node: Node) -> None:
    node.control_plane.failure = "connect"

    node.tick()

    assert node.agent.desired is None
    assert node.started == []
    assert node.agent.engines == {}


def test_engine_becomes_ready_once_healthy_and_the_next_heartbeat_says_so(node: Node) -> None:
    node.control_plane.engines = [desired()]
    node.tick()
    node.tick(1)
    assert node.engine().state == "starting"

    node.started[0].is_healthy = True
    node.tick(1)
    assert node.engine().state == "ready"
    node.tick()

    report = node.control_plane.last_report["engines"][0]
    assert report["state"] == "ready"
    assert report["last_healthy_at"] is not None
    assert report["loaded_adapters"] == ["legal"]
    assert len(node.started) == 1


# -- failures -------------------------------------------------------------------------------


def test_crashed_engine_is_reported_failed_and_restarted_only_after_the_backoff(
    node: Node,
) -> None:
    [first] = node.run_ready(desired())

    first.exit_code = 1
    node.tick(1)
    node.tick()  # the failure is reported at once

    report = node.control_plane.last_report["engines"][0]
    assert report["state"] == "failed"
    assert report["last_error"].startswith("engine exited with code 1")
    assert "CUDA out of memory" in report["last_error"]
    assert report["pid"] is None
    node.tick(BACKOFF_BASE - 0.1)
    assert len(node.started) == 1

    node.tick(0.1)

    assert len(node.started) == 2
    assert node.engine().state == "starting"
    node.tick()
    assert node.control_plane.last_report["engines"][0]["restarts"] == 1


def test_repeated_crashes_wait_longer_each_time(node: Node) -> None:
    node.control_plane.engines = [desired()]
    node.tick()
    node.started[0].exit_code = 1
    node.tick()  # failed: next try in 2 s
    node.tick(BACKOFF_BASE)
    assert len(node.started) == 2

    node.started[1].exit_code = 1
    node.tick()  # failed again: next try in 4 s
    node.tick(2 * BACKOFF_BASE - 0.1)
    assert len(node.started) == 2
    node.tick(0.1)

    assert len(node.started) == 3
    assert node.engine().restarts == 2


def test_tampered_cached_blob_refuses_the_start_and_the_retry_downloads_it_again(
    node: Node,
) -> None:
    def local_fetch(sha256: str, partial: Path) -> None:
        partial.write_bytes(CONTENT[sha256])

    node.cache.ensure(MODEL["files"] + ADAPTERS["legal"]["files"], local_fetch)
    weights_sha = sha_of(MODEL_FILES, "model.safetensors")
    blob = node.cache.blob_path(weights_sha)
    blob.chmod(0o600)
    blob.write_bytes(b"\xff" * blob.stat().st_size)  # same size, other bytes
    node.control_plane.engines = [desired()]

    node.tick()

    assert node.started == []
    assert node.engine().state == "refused"
    assert "verification failed" in node.engine().last_error
    assert "model.safetensors" in node.engine().last_error
    assert node.control_plane.blob_requests == []
    node.tick()
    assert node.control_plane.last_report["engines"][0]["state"] == "refused"

    node.tick(BACKOFF_BASE)

    assert node.control_plane.blob_requests == [weights_sha]
    assert len(node.started) == 1
    assert (node.started[0].model_dir / "model.safetensors").read_bytes() == MODEL_FILES[
        "model.safetensors"
    ]
    assert node.engine().state == "starting"


def test_engine_that_never_becomes_healthy_is_stopped_and_failed(node: Node) -> None:
    node.control_plane.engines = [desired()]
    node.tick()

    node.tick(runner.START_TIMEOUT_SECONDS + 1)

    assert node.started[0].stopped
    assert node.engine().state == "failed"
    assert "did not become healthy" in node.engine().last_error


def test_engine_unhealthy_for_over_a_minute_is_stopped_and_started_again(node: Node) -> None:
    [first] = node.run_ready(desired())

    first.is_healthy = False
    node.tick(runner.HEALTH_EVERY_SECONDS)
    assert node.engine().state == "unhealthy"
    assert not first.stopped

    node.tick(runner.UNHEALTHY_RESTART_SECONDS + 1)
    assert first.stopped
    assert node.engine().state == "failed"
    assert "unhealthy" in node.engine().last_error

    node.tick(BACKOFF_BASE)
    assert len(node.started) == 2


# -- changes to the desired state -------------------------------------------------------------


def test_adapter_added_to_desired_is_loaded_at_runtime_without_a_restart(node: Node) -> None:
    [engine] = node.run_ready(desired(adapters=("legal",)))

    node.control_plane.engines = [desired(adapters=("legal", "medical"))]
    node.tick(node.agent.interval)

    assert engine.loads == [("medical", node.cache.artifact_path(ADAPTERS["medical"]["digest"]))]
    assert (engine.loads[0][1] / "adapter_model.safetensors").read_bytes() == ADAPTER_FILES[
        "medical"
    ]["adapter_model.safetensors"]
    assert not engine.stopped
    assert len(node.started) == 1
    node.tick()
    assert node.control_plane.last_report["engines"][0]["loaded_adapters"] == ["legal", "medical"]
    assert node.control_plane.last_report["engines"][0]["restarts"] == 0


def test_adapter_removed_from_desired_is_unloaded_without_a_restart(node: Node) -> None:
    [engine] = node.run_ready(desired(adapters=("legal", "medical")))

    node.control_plane.engines = [desired(adapters=("medical",))]
    node.tick(node.agent.interval)

    assert engine.unloads == ["legal"]
    assert engine.loads == []
    assert not engine.stopped
    assert len(node.started) == 1
    node.tick()
    assert node.control_plane.last_report["engines"][0]["loaded_adapters"] == ["medical"]


def test_adapter_the_engine_refuses_is_reported_and_retried_later(node: Node) -> None:
    [engine] = node.run_ready(desired(adapters=()))
    engine.load_refusal = "HTTP 400: rank too large"

    node.control_plane.engines = [desired(adapters=("legal",))]
    node.tick(node.agent.interval)
    node.tick(1)

    assert [name for name, _ in engine.loads] == ["legal"]
    assert "rank too large" in node.engine().last_error
    assert node.engine().loaded == set()

    engine.load_refusal = None
    node.tick(runner.ADAPTER_RETRY_SECONDS)

    assert [name for name, _ in engine.loads] == ["legal", "legal"]
    assert node.engine().loaded == {"legal"}


def test_settings_change_restarts_the_engine_with_the_new_settings(node: Node) -> None:
    [first] = node.run_ready(desired(max_model_len=2048))

    node.control_plane.engines = [desired(max_model_len=8192)]
    node.tick(node.agent.interval)

    assert first.stopped
    assert len(node.started) == 2
    assert node.started[1].spec["settings"]["max_model_len"] == 8192
    assert node.engine().state == "starting"


def test_settings_change_starts_a_crashing_engine_again_without_waiting_out_its_backoff(
    node: Node,
) -> None:
    node.control_plane.engines = [desired(gpu_memory_utilization=0.95)]
    node.tick()
    for delay in (BACKOFF_BASE, 2 * BACKOFF_BASE):
        node.started[-1].exit_code = 1
        node.tick()
        node.tick(delay)
    node.started[-1].exit_code = 1
    node.tick()  # third failure: the next try would be 8 s away
    assert len(node.started) == 3

    node.control_plane.engines = [desired(gpu_memory_utilization=0.8)]
    node.tick()  # the failure's heartbeat brings the operator's fix

    assert len(node.started) == 4
    assert node.started[-1].spec["settings"]["gpu_memory_utilization"] == 0.8
    assert node.engine().state == "starting"


def test_engine_no_longer_desired_is_stopped(node: Node) -> None:
    first, second = node.run_ready(desired("i-1"), desired("i-2"))

    node.control_plane.engines = [desired("i-2")]
    node.tick(node.agent.interval)

    assert first.stopped
    assert not second.stopped
    assert list(node.agent.engines) == ["i-2"]
    node.tick()
    assert [e["instance"] for e in node.control_plane.last_report["engines"]] == ["i-2"]


# -- the control plane away, or refusing ------------------------------------------------------


@pytest.mark.parametrize("failure", ["connect", "503"])
def test_unreachable_control_plane_leaves_engines_running_on_the_last_desired_state(
    node: Node, failure: str
) -> None:
    [first] = node.run_ready(desired())
    last_desired = node.agent.desired

    node.control_plane.failure = failure
    node.tick(node.agent.interval)

    assert not first.stopped
    assert node.engine().state == "ready"
    assert node.agent.desired == last_desired
    assert node.agent.reachable is False
    attempts = node.control_plane.heartbeat_attempts
    node.tick(1)
    assert node.control_plane.heartbeat_attempts == attempts  # waits for the next interval

    # A crash during the outage is handled from the last desired state.
    first.exit_code = 1
    node.tick(1)
    node.tick(BACKOFF_BASE)
    assert len(node.started) == 2
    assert node.engine().state == "starting"

    node.control_plane.failure = None
    node.tick(node.agent.interval)
    assert node.agent.reachable is True
    report = node.control_plane.last_report["engines"][0]
    assert report["state"] == "starting"
    assert report["restarts"] == 1


def test_refused_node_stops_every_engine_and_raises_node_refused(node: Node) -> None:
    engines = node.run_ready(desired("i-1"), desired("i-2"))

    node.control_plane.failure = "401"
    with pytest.raises(NodeRefused, match="Node revoked"):
        node.tick(node.agent.interval)

    assert all(engine.stopped for engine in engines)
    assert {e.state for e in node.agent.engines.values()} == {"stopped"}
    assert all(e.process is None for e in node.agent.engines.values())


def restarted_agent(node: Node, desired_file: Path) -> Agent:
    """A new agent process on the same node: same cache, engines and control plane."""
    return Agent(
        http=node.agent.http,
        runtime=node.agent.runtime,
        cache=node.cache,
        gpus=lambda: TWO_GPUS,
        clock=node.clock,
        background=InlineExecutor(),
        desired_file=desired_file,
    )


def test_the_desired_state_is_saved_privately_and_resumed_while_the_control_plane_is_down(
    node: Node, tmp_path: Path
) -> None:
    saved = tmp_path / "desired.json"
    node.agent.desired_file = saved
    node.control_plane.engines = [desired()]
    node.tick()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # it holds the engines' API keys
    assert json.loads(saved.read_text()) == [desired()]

    node.control_plane.failure = "connect"
    agent = restarted_agent(node, saved)
    agent.tick()

    assert agent.desired == [desired()]
    assert len(node.started) == 2  # the first agent's engine, and the restarted agent's
    assert agent.engines["i-1"].state == "starting"


def test_a_refused_node_forgets_its_saved_desired_state(node: Node, tmp_path: Path) -> None:
    saved = tmp_path / "desired.json"
    node.agent.desired_file = saved
    node.run_ready(desired())
    assert saved.exists()

    node.control_plane.failure = "401"
    with pytest.raises(NodeRefused):
        node.tick(node.agent.interval)

    assert not saved.exists()


# -- the heartbeat report -------------------------------------------------------------------


def test_heartbeat_reports_gpus_engine_states_loaded_adapters_and_metrics(node: Node) -> None:
    [engine] = node.run_ready(desired(adapters=("legal", "medical")))

    report = node.control_plane.last_report

    assert [g["uuid"] for g in report["gpus"]] == ["GPU-0", "GPU-1"]
    assert report["gpus"][0]["memory_total_bytes"] == 80 * 2**30
    assert report["gpu_error"] is None
    assert report["platform"]["nvidia_driver"] == "550.54"
    assert report["platform"]["engine"] == {
        "module": "vllm.entrypoints.openai.api_server",
        "version": "0.32.0",
    }
    [reported] = report["engines"]
    assert reported["instance"] == "i-1"
    assert reported["state"] == "ready"
    assert reported["loaded_adapters"] == ["legal", "medical"]
    assert reported["pid"] == engine.pid
    assert reported["port"] == engine.port
    assert reported["engine_version"] == "0.32.0"
    assert reported["metrics"] == engine.metrics()
    # The engine's last output lines, each cut to a bounded length.
    assert reported["log_tail"][0] == "INFO Starting vLLM API server"
    assert len(reported["log_tail"][1]) == 500


def test_heartbeat_reports_why_there_are_no_gpus(node: Node) -> None:
    node.agent.gpus = lambda: NO_GPUS

    node.tick()

    report = node.control_plane.last_report
    assert report["gpus"] == []
    assert report["gpu_error"] == "NVML library not found (no NVIDIA driver installed)"


def test_heartbeat_body_never_contains_the_node_credential(node: Node) -> None:
    node.run_ready(desired())
    node.started[0].exit_code = 1
    node.tick(1)
    node.tick()

    assert len(node.control_plane.heartbeats) >= 3
    for request in node.control_plane.heartbeats:
        assert request.headers["Authorization"] == f"Bearer {CREDENTIAL}"
        assert CREDENTIAL.encode() not in request.content
        assert ENGINE_KEY.encode() not in request.content


def test_heartbeat_interval_follows_the_control_planes_answer(node: Node) -> None:
    node.control_plane.heartbeat_seconds = 30
    node.tick()
    sent = len(node.control_plane.heartbeats)

    node.tick(29)
    assert len(node.control_plane.heartbeats) == sent

    node.tick(1)
    assert len(node.control_plane.heartbeats) == sent + 1


# -- the report against the control plane's own schema ---------------------------------------

INSTANCE = "7f9c0a52-0000-4000-8000-000000000001"


def accepted_by_control_plane(report: dict[str, Any]) -> None:
    from appliance.fleet.agent_schemas import HeartbeatIn

    HeartbeatIn.model_validate(report)


def test_heartbeat_report_is_accepted_by_the_control_planes_schema(node: Node) -> None:
    node.run_ready(desired(INSTANCE, adapters=("legal", "medical")))

    accepted_by_control_plane(node.control_plane.last_report)


def test_long_engine_error_is_clipped_so_the_control_plane_still_accepts_the_report(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM prints its whole configuration on one line; a crash soon after it is a long error.
    lines = [f"line {i}: " + "x" * 1000 for i in range(15)]
    monkeypatch.setattr(
        FakeEngine, "failure", lambda self: "engine exited with code 1\n" + "\n".join(lines)
    )
    [engine] = node.run_ready(desired(INSTANCE))

    engine.exit_code = 1
    node.tick(1)
    node.tick()

    report = node.control_plane.last_report
    accepted_by_control_plane(report)
    error = report["engines"][0]["last_error"]
    assert len(error) <= runner.MAX_REPORTED_ERROR_CHARS
    assert error.startswith("engine exited with code 1\n")
    assert error.endswith(lines[-1])


def test_a_download_still_running_does_not_hold_up_heartbeats(node: Node) -> None:
    node.agent.background = NeverExecutor()
    node.control_plane.engines = [desired()]

    node.tick()
    node.tick(advance=30.0)  # three heartbeat intervals later

    assert node.started == []
    assert len(node.control_plane.heartbeats) >= 2
    [report] = node.control_plane.last_report["engines"]
    assert report["state"] == "downloading"
