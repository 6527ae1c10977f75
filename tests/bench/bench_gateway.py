"""What the gateway costs: the same load sent directly to an engine, through our gateway (/v1) and
through a LiteLLM proxy, in one run. Run it with `make bench-gateway`
(or `python -m tests.bench.bench_gateway --help` for the settings).

Two backends, one after the other:

* ``fake``: a fast fake OpenAI server (tests/bench/fake_openai_server.py) in its own process, so
  what is measured is the proxies' own cost. Many concurrent streams and plain requests.
* ``vllm``: the CPU build of vLLM serving the generated demo model, started by a real node agent
  from a deployment, as in tests/e2e. Little concurrency and short completions.

The control plane runs under uvicorn on SQLite in a temporary directory (tests/e2e/stack.py),
exactly as the embedded appliance does; the gateway finds the fake engine through an engine
instance row seeded as "ready" (no agent runs for it). LiteLLM comes from its own virtualenv
(.venv-bench, made by the Makefile) and runs with one worker, no database and no telemetry.
The load generator (httpx, asyncio, closed loop: N workers each send the next request when the
last one ended) runs in this process, apart from every server. Latency is request → last byte;
TTFT is request → the first SSE event that carries text. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django
import httpx

from tests.e2e.stack import REPO, SECRET_KEY, Stack, free_port, start_stack, wait_for

RESULTS = REPO / "docs" / "benchmarks.md"
SECTION = "## Gateway overhead (direct vs gateway vs LiteLLM)"
SECTION_PREFIX = "## Gateway"  # an earlier gateway section, whatever its exact title, is replaced
MODEL = "demo-llama"  # the registry name clients ask the gateway (and LiteLLM) for
PROMPT = [{"role": "user", "content": "Summarise the discharge note in one line."}]
PATHS = ("direct", "gateway", "litellm")
nan = float("nan")
ENGINE_START_SECONDS = 300


# --------------------------------------------------------------------------- the load generator


@dataclass
class Outcome:
    """What one (backend, mode, path) run measured."""

    backend: str
    mode: str  # "stream" or "plain"
    path: str  # "direct", "gateway" or "litellm"
    requests: int
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    ttfts: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # completion tokens per answer
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    skipped: str = ""  # why this path was not measured
    other_cpu: list[float] = field(default_factory=list)  # cores others used, per turn

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0


def percentile(values: list[float], pct: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _text_of(document: dict[str, Any]) -> bool:
    for choice in document.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            return True
    return False


def _refusal(status: int, body: str) -> str:
    """An error answer in a few words: the status and OpenAI's error code, else the body."""
    try:
        error = json.loads(body)["error"]
        return f"HTTP {status} {error.get('code')}: {str(error.get('message'))[:100]}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {status}: {body[:160]}"


async def _one(client: httpx.AsyncClient, url: str, payload: bytes, stream: bool, out: Any) -> None:
    """One request; appends to ``out`` (an Outcome) unless it is None (warm-up)."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    error = ""
    try:
        if stream:
            async with client.stream("POST", url, content=payload) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    error = _refusal(response.status_code, body)
                else:
                    done = False
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            continue
                        document = json.loads(data)
                        if "error" in document:
                            error = f"error event: {str(document['error'])[:160]}"
                        if first is None and _text_of(document):
                            first = time.perf_counter()
                        if document.get("usage"):
                            tokens = document["usage"].get("completion_tokens") or 0
                    if not done and not error:
                        error = "stream ended without [DONE]"
                    elif first is None and not error:
                        error = "stream carried no text"
        else:
            response = await client.post(url, content=payload)
            if response.status_code != 200:
                error = _refusal(response.status_code, response.text)
            else:
                tokens = (response.json().get("usage") or {}).get("completion_tokens") or 0
    except (httpx.HTTPError, ValueError) as exc:
        error = f"{type(exc).__name__}: {str(exc)[:120]}"
    ended = time.perf_counter()
    if out is None:
        return
    if error:
        out.errors[error] += 1
        return
    out.latencies.append(ended - started)
    out.tokens.append(tokens)
    if first is not None:
        out.ttfts.append(first - started)


async def _drive(
    clients: list[httpx.AsyncClient], url: str, payload: bytes, stream: bool, total: int, out: Any
) -> float:
    """``total`` requests from as many workers as there are clients (one connection each)."""
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            await _one(client, url, payload, stream, out)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients[:total]))
    return time.perf_counter() - started


async def measure(
    outcome: Outcome,
    url: str,
    key: str,
    body: dict[str, Any],
    count: int,
    warmup: int,
    timeout: float,
) -> Outcome:
    """``warmup`` requests (not counted: they open the connections), then ``count`` measured
    ones, added to what ``outcome`` already holds. Each worker has its own client and
    connection: one pool shared by many connections costs httpx more CPU per request as they
    grow, and the load generator would measure itself."""
    stream = outcome.mode == "stream"
    document = {**body, "stream": stream}
    if stream:
        document["stream_options"] = {"include_usage": True}
    payload = json.dumps(document).encode()
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # unused (plain HTTP), but made once, not per client
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                    limits=one,
                    timeout=timeout,
                    trust_env=False,
                    verify=tls,
                )
            )
            for _ in range(outcome.concurrency)
        ]
        await _drive(clients, url, payload, stream, max(warmup, len(clients)), None)
        outcome.wall += await _drive(clients, url, payload, stream, count, outcome)
    return outcome


# ------------------------------------------------------------------- what else the machine does


def _busy_ticks() -> int:
    """CPU time spent by everything on the machine (/proc/stat, clock ticks)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]  # less idle and iowait


def _tree_ticks(root: int) -> int:
    """CPU time of ``root`` and every process under it, living or reaped (clock ticks)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total


class OtherCpu:
    """Cores used by processes outside this benchmark (another user's tests, say) while it
    measures: all the machine's CPU time less that of this process and its children."""

    def __enter__(self) -> OtherCpu:
        self.cores = float("nan")
        self._start: tuple[float, int, int] | None
        try:
            self._start = (time.monotonic(), _busy_ticks(), _tree_ticks(os.getpid()))
        except (OSError, ValueError):
            self._start = None  # not Linux
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        started, busy, mine = self._start
        elapsed = time.monotonic() - started
        others = (_busy_ticks() - busy) - (_tree_ticks(os.getpid()) - mine)
        self.cores = max(0.0, others / os.sysconf("SC_CLK_TCK") / elapsed)


# ------------------------------------------------------------------------------- the processes


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(what, up, timeout, every=0.3)


def serve_gateway(stack: Stack, log: str, routes_seconds: int) -> None:
    """(Re)start the control plane's uvicorn on the same port, as run_appliance starts it, with a
    fresh process (empty route table and key cache) and its own log."""
    for process in stack.processes:
        args = process.args
        if isinstance(args, list) and "uvicorn" in args and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    stack.env["APPLIANCE_GATEWAY_ROUTES_SECONDS"] = str(routes_seconds)
    port = stack.url.rsplit(":", 1)[1]
    server = stack.spawn(
        [sys.executable, "-m", "uvicorn", "appliance.asgi:application",
         "--host", "127.0.0.1", "--port", port, "--no-server-header"],
        log,
    )  # fmt: skip
    wait_http(f"{stack.url}/healthz", server, "the control plane", 60)


def enroll(stack: Stack, name: str, state_dir: Path) -> int:
    token = stack.api.post("/enrollment-tokens", json={"name": name}).json()["secret"]
    enrolled = stack.agent(
        "enroll",
        "--server",
        stack.url,
        "--name",
        name,
        env={"APPLIANCE_ENROLLMENT_TOKEN": token},
        state_dir=state_dir,
    )
    if enrolled.returncode != 0:
        raise RuntimeError(f"enrolling {name} failed: {enrolled.stderr}")
    nodes = stack.api.get("/nodes").json()["items"]
    return int(next(n["id"] for n in nodes if n["name"] == name))


def deploy(stack: Stack, name: str, node_id: int) -> dict[str, Any]:
    model_id = stack.api.get("/models", params={"q": MODEL}).json()["items"][0]["id"]
    created = stack.api.post(
        "/deployments",
        json={
            "name": name,
            "model_id": model_id,
            "device": "cpu",
            "node_id": node_id,
            "max_model_len": 512,
        },
    )
    if created.status_code != 201:
        raise RuntimeError(f"creating deployment {name} failed: {created.text}")
    return dict(created.json())


def application_key(stack: Stack) -> str:
    """An application with no limits, granted the demo model, and one API key for it."""
    model_id = stack.api.get("/models", params={"q": MODEL}).json()["items"][0]["id"]
    app = stack.api.post(
        "/applications", json={"name": "gateway-bench", "description": "make bench-gateway"}
    )
    if app.status_code != 201:
        raise RuntimeError(f"creating the application failed: {app.text}")
    app_id = app.json()["id"]
    grant = stack.api.post(f"/applications/{app_id}/grants", json={"model_id": model_id})
    if grant.status_code != 201:
        raise RuntimeError(f"granting {MODEL} failed: {grant.text}")
    key = stack.api.post(f"/applications/{app_id}/keys", json={"name": "bench"})
    if key.status_code != 201:
        raise RuntimeError(f"creating the API key failed: {key.text}")
    return str(key.json()["secret"])


def shell(stack: Stack, code: str) -> str:
    return stack.manage("shell", "-c", code).stdout.strip()


def engine_key(instance_id: Any) -> str:
    """The key the engine requires, derived here from the stack's SECRET_KEY as the gateway
    derives it (never printed or passed through another process)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.settings")
    os.environ.setdefault("APPLIANCE_SECRET_KEY", SECRET_KEY)  # no key file written here
    django.setup()
    from django.test import override_settings

    from appliance.fleet.heartbeats import engine_api_key

    with override_settings(SECRET_KEY=SECRET_KEY):
        return engine_api_key(instance_id)


@dataclass
class LiteLLM:
    process: subprocess.Popen[bytes] | None
    url: str
    version: str
    reason: str = ""  # why it is not running


def litellm_version(binary: Path) -> str:
    python = binary.parent / "python"
    try:
        return subprocess.run(  # noqa: S603
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_litellm(
    binary: Path, var: Path, tag: str, api_base: str, key: str, served: str
) -> LiteLLM:
    """A LiteLLM proxy in front of one engine: one worker, no database, no telemetry, offline."""
    if not binary.exists():
        return LiteLLM(None, "", "", f"{binary} is missing (the Makefile installs it)")
    port = free_port()
    config = var / f"litellm-{tag}.yaml"
    config.write_text(  # JSON is YAML
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{served}",
                            "api_base": api_base,
                            "api_key": key,
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "drop_params": True},
                "general_settings": {},
            },
            indent=1,
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPLIANCE_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list from the internet
        NO_PROXY="127.0.0.1,localhost",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    log = var / f"litellm-{tag}.log"
    process = subprocess.Popen(  # noqa: S603
        [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1", "--telemetry", "False"],
        cwd=var,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", process, "the LiteLLM proxy", 180)
    except (RuntimeError, AssertionError) as exc:
        stop(process)
        return LiteLLM(None, "", "", f"it did not start ({exc}); log: {log_tail(log, 5)}")
    return LiteLLM(process, url, litellm_version(binary))


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# ------------------------------------------------------------------------------- the two phases


@dataclass
class Backend:
    name: str
    description: str
    concurrency: int
    requests: int
    body: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_paths(
    backend: Backend,
    urls: dict[str, tuple[str, str, str]],  # path → (base URL, key, model), or missing
    skipped: dict[str, str],
    options: argparse.Namespace,
    timeout: float,
) -> None:
    """Per mode, the paths take turns (``--rounds`` times each), so that a change in what else
    the machine is doing falls on all of them alike."""
    rounds = max(1, min(options.rounds, backend.requests))
    for mode in options.modes:
        outcomes = {}
        for path in PATHS:
            outcome = Outcome(backend.name, mode, path, backend.requests, backend.concurrency)
            if path not in urls:
                outcome.skipped = skipped.get(path) or "not measured"
            outcomes[path] = outcome
            backend.outcomes.append(outcome)
        for turn in range(rounds):
            count = backend.requests // rounds + (turn < backend.requests % rounds)
            warmup = backend.concurrency * (2 if turn == 0 else 1)
            for path, outcome in outcomes.items():
                if outcome.skipped:
                    continue
                base, key, model = urls[path]
                body = {**backend.body, "model": model}
                url = f"{base}/v1/chat/completions"
                with OtherCpu() as others:
                    asyncio.run(measure(outcome, url, key, body, count, warmup, timeout))
                outcome.other_cpu.append(others.cores)
        for path, outcome in outcomes.items():
            if outcome.skipped:
                continue
            print(
                f"  {backend.name} {mode:6} {path:8} p50 "
                f"{percentile(outcome.latencies, 50) * 1000:.1f} ms, {outcome.rate():.1f} req/s, "
                f"{sum(outcome.errors.values())} errors",
                flush=True,
            )


def fake_phase(
    stack: Stack, options: argparse.Namespace, gateway_key: str, backend: Backend
) -> None:
    port = free_port()
    fake = stack.spawn(
        [sys.executable, "-m", "tests.bench.fake_openai_server", "--port", str(port),
         "--chunks", str(options.fake_chunks)],
        "fake-engine.log",
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", fake, "the fake engine", 30)
    node_id = enroll(stack, "bench-fake-node", stack.var / "agent-fake")  # its agent never runs
    deployment = deploy(stack, "bench-fake", node_id)
    # What the node's agent would report: the engine ready on that port (no agent runs for it).
    shell(
        stack,
        "from appliance.fleet.models import EngineInstance; "
        f"print(EngineInstance.objects.filter(deployment_id={deployment['id']})"
        f".update(state='ready', port={port}, loaded_adapters=[]))",
    )
    serve_gateway(stack, "server-fake.log", options.routes_seconds)
    litellm = (
        start_litellm(
            options.litellm, stack.var, "fake", f"http://127.0.0.1:{port}/v1", "fake", "bench-fake"
        )
        if not options.no_litellm
        else LiteLLM(None, "", "", "--no-litellm")
    )
    urls = {
        "direct": (f"http://127.0.0.1:{port}", "fake", "bench-fake"),
        "gateway": (stack.url, gateway_key, MODEL),
    }
    if litellm.process is not None:
        urls["litellm"] = (litellm.url, "sk-bench", MODEL)
        backend.notes.append(f"LiteLLM {litellm.version}")
    else:
        backend.notes.append(f"LiteLLM: not measured ({one_line(litellm.reason)})")
    try:
        run_paths(backend, urls, {"litellm": litellm.reason}, options, 60)
    finally:
        stop(litellm.process)
        stop(fake)
        removed = stack.api.delete(f"/deployments/{deployment['id']}")
        if removed.status_code != 200:
            print(f"removing the fake deployment failed: {removed.text}", file=sys.stderr)


def vllm_phase(
    stack: Stack, options: argparse.Namespace, gateway_key: str, backend: Backend
) -> None:
    node_id = enroll(stack, "bench-node", stack.var / "agent")
    stack.spawn(
        [sys.executable, "-m", "appliance.agent.cli", "--state-dir", str(stack.var / "agent"),
         "run", "--engine-python", options.engine_python, "--interval", "2"],
        "agent.log",
    )  # fmt: skip
    deployment = deploy(stack, "bench", node_id)
    started = time.monotonic()

    def ready() -> dict[str, Any] | None:
        engines = stack.api.get(f"/deployments/{deployment['id']}").json()["engines"]
        return engines[0] if engines and engines[0]["state"] == "ready" else None

    engine = wait_for("the vLLM engine to be ready", ready, ENGINE_START_SECONDS, 2)
    backend.notes.append(
        f"vLLM {engine.get('engine_version') or '?'} (CPU build), ready "
        f"{time.monotonic() - started:.0f} s after the deployment was created"
    )
    key = engine_key(engine["id"])
    base = f"http://127.0.0.1:{engine['port']}"
    serve_gateway(stack, "server-vllm.log", options.routes_seconds)
    litellm = (
        start_litellm(options.litellm, stack.var, "vllm", f"{base}/v1", key, "bench")
        if not options.no_litellm
        else LiteLLM(None, "", "", "--no-litellm")
    )
    urls = {"direct": (base, key, "bench"), "gateway": (stack.url, gateway_key, MODEL)}
    if litellm.process is not None:
        urls["litellm"] = (litellm.url, "sk-bench", MODEL)
        backend.notes.append(f"LiteLLM {litellm.version}")
    else:
        backend.notes.append(f"LiteLLM: not measured ({one_line(litellm.reason)})")
    try:
        run_paths(backend, urls, {"litellm": litellm.reason}, options, 300)
    finally:
        stop(litellm.process)


# ----------------------------------------------------------------------------------- the report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024**2:.0f} GiB memory"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores{memory}, no GPU, "
        f"Python {platform.python_version()}"
    )


def one_line(text: str, limit: int = 300) -> str:
    """Text that fits in a Markdown table cell or a code span."""
    flat = " ".join(text.split()).replace("|", "/").replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or not b:
        return "-"
    return f"{a / b:.2f}x"


def tables(backends: list[Backend]) -> list[str]:
    lines = [
        "| Backend | Mode | Path | OK / sent | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms "
        "| req/s | Tokens/answer | Errors | Others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    errors: list[str] = []
    for backend in backends:
        for o in backend.outcomes:
            if o.skipped:
                lines.append(
                    f"| {o.backend} | {o.mode} | {o.path} | not measured: {one_line(o.skipped, 120)} "
                    "| | | | | | | | |"
                )
                continue
            stream = o.mode == "stream"
            tokens = f"{statistics.mean(o.tokens):.1f}" if o.tokens else "-"
            failed = sum(o.errors.values())
            lines.append(
                f"| {o.backend} | {o.mode} | {o.path} | {o.ok} / {o.requests} "
                f"| {_ms(percentile(o.latencies, 50))} | {_ms(percentile(o.latencies, 99))} "
                f"| {_ms(percentile(o.ttfts, 50)) if stream else '-'} "
                f"| {_ms(percentile(o.ttfts, 99)) if stream else '-'} "
                f"| {o.rate():.1f} | {tokens} | {failed} | {max(o.other_cpu or [nan]):.2f} |"
            )
            errors += [
                f"* {o.backend} {o.mode} {o.path}: {n} x `{one_line(text)}`"
                for text, n in o.errors.most_common(5)
            ]
    lines += [
        "",
        "Ratios to direct (latency and TTFT: how many times longer; req/s: the share of the "
        "direct rate kept; added ms: p50 latency minus direct p50):",
        "",
        "| Backend | Mode | Path | p50 | p99 | TTFT p50 | req/s | added p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        by = {(o.mode, o.path): o for o in backend.outcomes}
        for (mode, path), o in by.items():
            direct = by.get((mode, "direct"))
            if path == "direct" or o.skipped or direct is None or direct.skipped:
                continue
            stream = mode == "stream"
            added = percentile(o.latencies, 50) - percentile(direct.latencies, 50)
            lines.append(
                f"| {backend.name} | {mode} | {path}/direct "
                f"| {_ratio(percentile(o.latencies, 50), percentile(direct.latencies, 50))} "
                f"| {_ratio(percentile(o.latencies, 99), percentile(direct.latencies, 99))} "
                f"| {_ratio(percentile(o.ttfts, 50), percentile(direct.ttfts, 50)) if stream else '-'} "
                f"| {_ratio(o.rate(), direct.rate())} | {_ms(added)} |"
            )
    if errors:
        lines += ["", "Errors seen:", "", *errors]
    return lines


def report(backends: list[Backend], options: argparse.Namespace, started: datetime) -> str:
    command = "python -m tests.bench.bench_gateway " + shlex.join(sys.argv[1:])
    paragraphs = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}, with `{command.strip()}` "
        "(tests/bench/bench_gateway.py, which `make bench-gateway` runs, with BENCH_ARGS if "
        "set); whole run "
        f"{(datetime.now(UTC) - started).total_seconds() / 60:.1f} min.",
        "The same load goes (1) directly to the engine, (2) through the gateway (`/v1`, "
        "`uvicorn appliance.asgi:application`, one process, SQLite, no Redis: the embedded "
        "appliance; every request authenticated, checked, audited and its usage recorded) and "
        "(3) through a LiteLLM proxy (one worker, no database) in front of the same engine. "
        "Closed loop: the concurrency is the number of clients, each sending its next request "
        "when the last one ended, after warm-up requests that are not counted. Latency is "
        "request → last byte; TTFT is request → first SSE event carrying text. Chat "
        "completions; streams ask "
        f"for usage. The gateway rereads its route table every {options.routes_seconds} s "
        "(APPLIANCE_GATEWAY_ROUTES_SECONDS). Everything (load generator, proxies, engine) shares "
        "the same cores, so the rates are of this machine as a whole, and the ratios are what "
        "compares; the three paths take turns, so a change in the machine's other work falls on "
        "all of them. *Others' CPU* is the most CPU (in cores, of "
        f"{os.cpu_count()}) that processes outside the benchmark used during one of a row's "
        "turns: well above 0 means other work was running and skews that row.",
    ]
    lines = [SECTION, ""]
    for paragraph in paragraphs:
        lines += [textwrap.fill(paragraph, 100, break_on_hyphens=False), ""]
    for backend in backends:
        notes = "; ".join(backend.notes)
        lines.append(
            f"* **{backend.name}**: {backend.description}; {backend.concurrency} concurrent, "
            f"{backend.requests} requests per path and mode in {options.rounds} "
            f"turn{'s' if options.rounds != 1 else ''} "
            f"(each after {backend.concurrency} warm-up requests, {2 * backend.concurrency} "
            "before the first), "
            f"`max_tokens` {backend.body.get('max_tokens')}" + (f". {notes}." if notes else ".")
        )
    lines += ["", *tables(backends), ""]
    return "\n".join(lines)


def replace_section(text: str, prefix: str) -> None:
    """Put ``text`` in docs/benchmarks.md in place of the section whose heading starts with
    ``prefix`` (or at the end)."""
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    kept, skipping = [], False
    for line in existing.splitlines():
        if line.startswith("## "):
            skipping = line.startswith(prefix)
        if not skipping:
            kept.append(line)
    RESULTS.write_text("\n".join(kept).rstrip("\n") + "\n\n" + text)


def write(text: str) -> None:
    replace_section(text, SECTION_PREFIX)


# ----------------------------------------------------------------------------------------- main


def options_of(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_gateway",
        description="Direct vs gateway vs LiteLLM, against a fake engine and the CPU vLLM.",
    )
    parser.add_argument("--backends", default="fake,vllm", help="fake, vllm or both (default)")
    parser.add_argument(
        "--modes", default="stream,plain", help="stream, plain (non-streaming) or both (default)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns the paths take, each with its share of N"
    )
    parser.add_argument("--fake-concurrency", type=int, default=64)
    parser.add_argument("--fake-requests", type=int, default=1000)
    parser.add_argument("--fake-chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--vllm-concurrency", type=int, default=4)
    parser.add_argument("--vllm-requests", type=int, default=80)
    parser.add_argument("--max-tokens", type=int, default=16, help="per request, for vLLM")
    parser.add_argument(
        "--routes-seconds", type=int, default=3600, help="APPLIANCE_GATEWAY_ROUTES_SECONDS"
    )
    parser.add_argument(
        "--litellm",
        type=Path,
        default=REPO / ".venv-bench" / "bin" / "litellm",
        help="the litellm command (make bench-gateway installs it into .venv-bench)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="measure direct and gateway")
    parser.add_argument(
        "--engine-python",
        default=os.environ.get("APPLIANCE_ENGINE_PYTHON") or str(REPO / ".venv-engine/bin/python"),
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args(argv)
    options.backends = [b for b in options.backends.split(",") if b]
    options.modes = [m for m in options.modes.split(",") if m]
    if not set(options.backends) <= {"fake", "vllm"} or not options.backends:
        parser.error("--backends: fake, vllm or fake,vllm")
    if not set(options.modes) <= {"stream", "plain"} or not options.modes:
        parser.error("--modes: stream, plain or stream,plain")
    return options


def main(argv: list[str] | None = None) -> None:
    options = options_of(argv)
    started = datetime.now(UTC)
    backends: list[Backend] = []
    failures: list[str] = []
    var = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    print(f"state and logs in {var}", flush=True)
    stack = start_stack(var)
    try:
        gateway_key = application_key(stack)
        if "fake" in options.backends:
            fake = Backend(
                "fake",
                f"fake OpenAI server (tests/bench/fake_openai_server.py, {options.fake_chunks} "
                "chunks per stream, no delay)",
                options.fake_concurrency,
                options.fake_requests,
                {"messages": PROMPT, "max_tokens": 16},
            )
            backends.append(fake)
            try:
                fake_phase(stack, options, gateway_key, fake)
            except Exception as exc:
                failures.append(f"fake: {type(exc).__name__}: {exc}")
        if "vllm" in options.backends:
            real = Backend(
                "vllm",
                "CPU build of vLLM serving the generated demo model (2-layer Llama)",
                options.vllm_concurrency,
                options.vllm_requests,
                {"messages": PROMPT, "max_tokens": options.max_tokens, "ignore_eos": True},
            )
            backends.append(real)
            if not Path(options.engine_python).exists():
                failures.append(f"vllm: no vLLM at {options.engine_python} (run `make engine`)")
            else:
                try:
                    vllm_phase(stack, options, gateway_key, real)
                except Exception as exc:
                    failures.append(f"vllm: {type(exc).__name__}: {exc}")
    finally:
        stack.stop()
    text = report(backends, options, started)
    print("\n" + text)
    if failures:
        print("\nFAILED (docs/benchmarks.md left as it was):", *failures, sep="\n  ")
        print(f"state and logs kept in {var}")
        sys.exit(1)
    if not options.no_write:
        write(text)
        print(f"written to {RESULTS}")
    errors = any(o.errors for b in backends for o in b.outcomes)
    if options.keep or errors:
        why = "some requests failed: see server-*.log there" if errors else "--keep"
        print(f"state and logs kept in {var} ({why})")
    else:
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
