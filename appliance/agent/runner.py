"""The agent's loop: heartbeat, then bring this node's engines to the desired state.

Each tick advances every engine one step (download and verify, start, wait for /health, watch,
load or unload adapters) without blocking on a starting engine, and heartbeats when the interval
has passed or an engine changed state. When the control plane cannot be reached the engines keep
running on the last desired state; when it refuses the node (revoked) the agent stops them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from appliance.agent import client as control_plane
from appliance.agent.backoff import Backoff
from appliance.agent.cache import ArtifactCache, ArtifactMismatch, InvalidFileRef
from appliance.agent.config import write_private
from appliance.agent.download import DownloadFailed, fetch_blob
from appliance.agent.engines import EngineProcess, EngineRuntime, free_port
from appliance.agent.nvml import HostGpus, collect
from appliance.agent.reconcile import adapter_changes, engine_fingerprint, plan

logger = logging.getLogger("appliance.agent")

TICK_SECONDS = 1.0
HEALTH_EVERY_SECONDS = 5.0
START_TIMEOUT_SECONDS = 900.0  # a large model on a slow disk
UNHEALTHY_RESTART_SECONDS = 60.0
ADAPTER_RETRY_SECONDS = 30.0
# The control plane keeps 4000 characters of an engine's error and refuses a report with more than
# 8000: one long error must not make every heartbeat fail.
MAX_REPORTED_ERROR_CHARS = 4000


class NodeRefused(Exception):
    """The control plane no longer accepts this node; its engines were stopped."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@cache
def agent_version() -> str:
    try:
        return metadata.version("appliance")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class ManagedEngine:
    """One desired engine and what this agent knows about it."""

    spec: dict[str, Any]
    fingerprint: str
    port: int
    state: str = "pending"
    process: EngineProcess | None = None
    backoff: Backoff = field(default_factory=Backoff)
    starts: int = 0
    restarts: int = 0
    last_error: str = ""
    started_at: str | None = None
    last_healthy_at: str | None = None
    launched_at: float = 0.0
    unhealthy_since: float | None = None
    next_health_check: float = 0.0
    loaded: set[str] = field(default_factory=set)
    preparing: Future[tuple[Path, dict[str, Path]]] | None = None  # download and verification
    adapter_retry_at: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def report(self, engine_version: str) -> dict[str, Any]:
        return {
            "instance": self.spec["instance"],
            "state": self.state,
            "port": self.port if self.process else None,
            "pid": self.process.pid if self.process else None,
            "engine_version": engine_version,
            "started_at": self.started_at,
            "last_healthy_at": self.last_healthy_at,
            "restarts": self.restarts,
            "last_error": _clipped(self.last_error),
            "loaded_adapters": sorted(self.loaded),
            "metrics": self.metrics,
            # What the engine printed last, for the console (vLLM logs no request text unless
            # asked to, and the agent never asks).
            "log_tail": [line[:LOG_LINE_CHARS] for line in self.process.tail]
            if self.process
            else [],
        }


class Agent:
    """Runs this node's engines from the control plane's desired state."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        runtime: EngineRuntime,
        cache: ArtifactCache,
        interval: float | None = None,
        gpus: Callable[[], HostGpus] = collect,
        clock: Callable[[], float] = time.monotonic,
        background: Executor | None = None,
        desired_file: Path | None = None,
    ) -> None:
        self.http = http
        self.runtime = runtime
        self.cache = cache
        self.fixed_interval = interval
        self.interval = interval or 10.0
        self.gpus = gpus
        self.clock = clock
        self.engines: dict[str, ManagedEngine] = {}
        self.desired: list[dict[str, Any]] | None = None  # None until the first answer
        self.next_heartbeat = 0.0
        self.changed = False
        self.reachable = True
        self.background = background or ThreadPoolExecutor(2, thread_name_prefix="artifacts")
        self.desired_file = desired_file
        self.resume()
        self.cache_lock = threading.Lock()

    def resume(self) -> None:
        """Start from the last desired state saved on disk, so an agent restarted while the
        control plane is unreachable brings its engines back; the first answer replaces it."""
        if not self.desired_file or not self.desired_file.exists():
            return
        try:
            saved = json.loads(self.desired_file.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring the saved desired state: %s", type(exc).__name__)
            return
        if isinstance(saved, list):
            self.desired = saved
            logger.info("resuming %d engine(s) from the saved desired state", len(saved))

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(TICK_SECONDS)
        finally:
            self.stop_all()
            self.background.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        now = self.clock()
        if now >= self.next_heartbeat or self.changed:
            self.heartbeat(now)
        self.reconcile()

    def heartbeat(self, now: float) -> None:
        self.changed = False
        for engine in self.engines.values():
            if engine.process and engine.state == "ready":
                engine.metrics = engine.process.metrics()
        report = self.report()
        try:
            answer = control_plane.heartbeat(self.http, report)
        except control_plane.Refused as exc:
            logger.error("the control plane refused this node (%s); stopping engines", exc)
            self.stop_all()
            if self.desired_file:
                self.desired_file.unlink(missing_ok=True)
            raise NodeRefused(str(exc)) from exc
        except (control_plane.Unreachable, control_plane.Rejected) as exc:
            if self.reachable:
                logger.warning("heartbeat failed (%s); engines keep running", exc)
            self.reachable = False
            self.next_heartbeat = now + self.interval
            return
        if not self.reachable:
            logger.info("control plane reachable again")
        self.reachable = True
        desired = list(answer.get("engines") or [])
        if desired != self.desired and self.desired_file:
            write_private(self.desired_file, desired)  # holds engine API keys: 0600
        self.desired = desired
        self.prune_cache()
        if self.fixed_interval is None:
            self.interval = float(answer.get("heartbeat_seconds") or self.interval)
        self.next_heartbeat = now + self.interval

    def report(self) -> dict[str, Any]:
        host = self.gpus()
        return {
            "agent_version": agent_version(),
            "hostname": socket.gethostname(),
            "engine_host": self.runtime.host,
            "platform": {
                "os": platform.platform(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "memory_bytes": memory_bytes(),
                "engine": {"module": self.runtime.module, "version": self.runtime.version},
                "nvidia_driver": host.driver_version,
                "cuda_driver": host.cuda_driver_version,
            },
            "gpus": [gpu.to_dict() for gpu in host.gpus],
            "gpu_error": host.error,
            "engines": [e.report(self.runtime.version) for e in self.engines.values()],
        }

    # -- reconciliation -----------------------------------------------------------------------

    def reconcile(self) -> None:
        if self.desired is None:
            return
        steps = plan(self.desired, {i: e.fingerprint for i, e in self.engines.items()})
        for instance in steps.stop:
            engine = self.engines.pop(instance)
            logger.info("stopping engine %s (no longer desired)", instance)
            if engine.process:
                engine.process.stop()
            self.changed = True
        by_id = {spec["instance"]: spec for spec in self.desired}
        for instance in steps.restart:
            engine = self.engines[instance]
            logger.info("restarting engine %s with new settings", instance)
            if engine.process:
                engine.process.stop()
            engine.process, engine.state, engine.loaded = None, "pending", set()
            engine.preparing = None  # files of the old settings: fetch again for the new ones
            engine.fingerprint = engine_fingerprint(by_id[instance])
            engine.starts = 0  # a planned restart is not counted (or audited) as a crash restart
            # New settings may be the operator's fix for the crashes: try them at once.
            engine.backoff.reset()
        for instance in steps.start:
            spec = by_id[instance]
            self.engines[instance] = ManagedEngine(
                spec=spec, fingerprint=engine_fingerprint(spec), port=0
            )
        for instance, engine in self.engines.items():
            engine.spec = by_id[instance]
            try:
                self.advance(engine)
            except Exception as exc:  # one engine's trouble must not stop the others
                logger.exception("engine %s: unexpected error", instance)
                if engine.process:
                    engine.process.stop(grace_seconds=0)
                self.fail(engine, "failed", f"agent error: {type(exc).__name__}", self.clock())

    def advance(self, engine: ManagedEngine) -> None:
        now = self.clock()
        process = engine.process
        if process is None:
            if engine.backoff.ready(now):
                self.launch(engine, now)
            return
        if process.poll() is not None:
            process.stop(grace_seconds=0)  # its workers (EngineCore, TP ranks) go with it
            self.fail(engine, "failed", process.failure(), now)
            return
        if engine.state == "starting":
            if process.healthy():
                self.set_state(engine, "ready")
                engine.last_healthy_at = _now()
                engine.backoff.record_healthy(now)
                engine.next_health_check = now + HEALTH_EVERY_SECONDS
            elif now - engine.launched_at > START_TIMEOUT_SECONDS:
                process.stop()
                self.fail(engine, "failed", "engine did not become healthy in time", now)
            return
        if now >= engine.next_health_check:
            engine.next_health_check = now + HEALTH_EVERY_SECONDS
            self.check_health(engine, process, now)
        if engine.state == "ready":
            self.sync_adapters(engine, process, now)

    def check_health(self, engine: ManagedEngine, process: EngineProcess, now: float) -> None:
        if process.healthy():
            engine.unhealthy_since = None
            engine.last_healthy_at = _now()
            engine.backoff.record_healthy(now)
            self.set_state(engine, "ready")
            return
        engine.unhealthy_since = engine.unhealthy_since or now
        self.set_state(engine, "unhealthy")
        if now - engine.unhealthy_since > UNHEALTHY_RESTART_SECONDS:
            process.stop()
            self.fail(engine, "failed", "engine stayed unhealthy; restarting it", now)

    def prepare(self, spec: dict[str, Any]) -> tuple[Path, dict[str, Path]]:
        """Download and verify a desired engine's files (in the background: a large model must
        not hold up heartbeats and the other engines)."""
        model_dir = self.fetch(spec["model"])
        return model_dir, {a["name"]: self.fetch(a) for a in spec["adapters"]}

    def launch(self, engine: ManagedEngine, now: float) -> None:
        spec = engine.spec
        if engine.preparing is None:
            self.set_state(engine, "downloading")
            engine.preparing = self.background.submit(self.prepare, spec)
        if not engine.preparing.done():
            return
        preparing, engine.preparing = engine.preparing, None
        try:
            model_dir, adapter_dirs = preparing.result()
        except ArtifactMismatch as exc:
            self.fail(engine, "refused", f"artifact verification failed, not started: {exc}", now)
            return
        except (DownloadFailed, InvalidFileRef, OSError) as exc:
            self.fail(engine, "failed", f"artifact download failed: {exc}", now)
            return
        try:
            engine.port = free_port(self.runtime.host)  # at each start: the old one may be taken
            engine.process = EngineProcess.start(
                self.runtime,
                spec=spec,
                model_dir=model_dir,
                adapter_dirs=adapter_dirs,
                port=engine.port,
            )
        except OSError as exc:
            self.fail(engine, "failed", f"engine could not be started: {exc}", now)
            return
        if engine.starts:
            engine.restarts += 1
        engine.starts += 1
        engine.launched_at = now
        engine.started_at = _now()
        engine.loaded = set(adapter_dirs)
        engine.unhealthy_since = None
        self.set_state(engine, "starting")
        logger.info(
            "started engine %s (pid %s, port %s)", spec["instance"], engine.process.pid, engine.port
        )

    def sync_adapters(self, engine: ManagedEngine, process: EngineProcess, now: float) -> None:
        changes = adapter_changes(engine.spec["adapters"], engine.loaded)
        for name in changes.unload:
            refusal = process.unload_adapter(name)
            if refusal is None:
                engine.loaded.discard(name)
                self.changed = True
            else:
                engine.last_error = f"unloading adapter {name} failed: {refusal}"
        artifacts = {a["name"]: a for a in engine.spec["adapters"]}
        for name in changes.load:
            if engine.adapter_retry_at.get(name, 0.0) > now:
                continue
            try:
                path = self.fetch(artifacts[name])
            except (ArtifactMismatch, DownloadFailed, InvalidFileRef, OSError) as exc:
                error: str | None = f"artifact of adapter {name} refused: {exc}"
            else:
                error = process.load_adapter(name, path)
            if error is None:
                engine.loaded.add(name)
                engine.adapter_retry_at.pop(name, None)
            else:
                engine.last_error = f"loading adapter {name} failed: {error}"
                engine.adapter_retry_at[name] = now + ADAPTER_RETRY_SECONDS
            self.changed = True

    def fetch(self, artifact: dict[str, Any]) -> Path:
        """Download what is missing, then verify every file; the directory vLLM reads. One at a
        time: the cache's partial files are not safe for two writers."""
        files = artifact["files"]
        with self.cache_lock:
            self.cache.ensure(files, partial(fetch_blob, self.http))
            return self.cache.materialize(artifact["digest"], files)

    def set_state(self, engine: ManagedEngine, state: str) -> None:
        if engine.state != state:
            engine.state = state
            self.changed = True

    def fail(self, engine: ManagedEngine, state: str, error: str, now: float) -> None:
        delay = engine.backoff.record_failure(now)
        engine.process = None
        engine.loaded = set()
        engine.last_error = error
        self.set_state(engine, state)
        self.changed = True
        first_line = error.splitlines()[0] if error else state
        logger.warning(
            "engine %s %s: %s; next try in %.0fs", engine.spec["instance"], state, first_line, delay
        )

    def prune_cache(self) -> None:
        """Drop artifact directories no desired engine uses (blobs stay for a quick return)."""
        keep = {
            artifact["digest"]
            for spec in self.desired or []
            for artifact in (spec["model"], *spec["adapters"])
        }
        try:
            self.cache.prune(keep)
        except OSError as exc:
            logger.warning("could not prune the artifact cache: %s", exc)

    def stop_all(self) -> None:
        for engine in self.engines.values():
            if engine.process:
                engine.process.stop()
                engine.process = None
                engine.state = "stopped"


LOG_LINE_CHARS = 500


def _clipped(error: str) -> str:
    """At most MAX_REPORTED_ERROR_CHARS: the start (what failed) and the end (its last lines)."""
    if len(error) <= MAX_REPORTED_ERROR_CHARS:
        return error
    head = MAX_REPORTED_ERROR_CHARS // 4
    return error[:head] + "\n…\n" + error[-(MAX_REPORTED_ERROR_CHARS - head - 3) :]


def memory_bytes() -> int | None:
    """This machine's physical memory, for the platform facts the control plane shows."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
