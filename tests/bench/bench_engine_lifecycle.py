"""How long the engine life cycle takes, end to end, on this machine: run with `make bench-engine`.

A real control plane, agent and vLLM (CPU build) serving the generated demo model, as in
tests/e2e. It times: deployment created → engine ready (first start, artifacts downloaded and
verified), an adapter hot-loaded and unloaded at runtime (median of a few), and an engine killed →
ready again (the agent's crash restart). The figures that matter are ratios within one run: a
runtime adapter change against an engine restart. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.e2e.stack import REPO, Stack, engine_python, start_stack, wait_for

ROUNDS = 3
RESULTS = REPO / "docs" / "benchmarks.md"
SECTION = "## Engine life cycle (CPU build of vLLM, demo model)"


def engine(stack: Stack, deployment_id: int) -> dict[str, Any]:
    return stack.api.get(f"/deployments/{deployment_id}").json()["engines"][0]


def timed(what: str, action: Any, done: Any, timeout: float = 600) -> float:
    start = time.monotonic()
    action()
    wait_for(what, done, timeout, every=0.25)
    return time.monotonic() - start


def run(stack: Stack) -> dict[str, Any]:
    token = stack.api.post("/enrollment-tokens", json={"name": "bench"}).json()["secret"]
    enrolled = stack.agent(
        "enroll",
        "--server",
        stack.url,
        "--name",
        "bench",
        env={"APPLIANCE_ENROLLMENT_TOKEN": token},
    )
    assert enrolled.returncode == 0, enrolled.stderr
    stack.spawn(
        [sys.executable, "-m", "appliance.agent.cli", "--state-dir", str(stack.var / "agent"),
         "run", "--engine-python", stack.env["APPLIANCE_ENGINE_PYTHON"], "--interval", "1"],
        "agent.log",
    )  # fmt: skip
    node_id = stack.api.get("/nodes").json()["items"][0]["id"]
    adapters = {a["name"]: a["id"] for a in stack.api.get("/adapters").json()["items"]}
    model_id = stack.api.get("/models", params={"q": "demo-llama"}).json()["items"][0]["id"]
    created: dict[str, Any] = {}

    def create() -> None:
        created.update(
            stack.api.post(
                "/deployments",
                json={
                    "name": "bench",
                    "model_id": model_id,
                    "adapter_ids": [adapters["demo-triage"]],
                    "device": "cpu",
                    "node_id": node_id,
                    "max_model_len": 512,
                    "max_loras": 2,
                    "max_lora_rank": 8,
                },
            ).json()
        )

    def state_is(state: str, **extra: Any) -> Any:
        def check() -> bool:
            found = engine(stack, created["id"])
            return found["state"] == state and all(found[k] == v for k, v in extra.items())

        return check

    first_start = timed("the first start", create, state_is("ready"))

    def set_adapters(*names: str) -> Any:
        ids = [adapters[n] for n in names]
        return lambda: stack.api.patch(f"/deployments/{created['id']}", json={"adapter_ids": ids})

    loads, unloads = [], []
    for _ in range(ROUNDS):
        both = ["demo-billing", "demo-triage"]
        loads.append(
            timed("a hot load", set_adapters(*both), state_is("ready", loaded_adapters=both))
        )
        unloads.append(
            timed(
                "an unload",
                set_adapters("demo-triage"),
                state_is("ready", loaded_adapters=["demo-triage"]),
            )
        )
    restarts = engine(stack, created["id"])["restarts"]
    pid = engine(stack, created["id"])["pid"]
    crash_restart = timed(
        "the crash restart",
        lambda: os.kill(pid, signal.SIGKILL),
        state_is("ready", restarts=restarts + 1),
    )
    return {
        "first_start": first_start,
        "hot_load": statistics.median(loads),
        "unload": statistics.median(unloads),
        "crash_restart": crash_restart,
    }


def write(figures: dict[str, Any]) -> str:
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, no GPU)"
    ratio = figures["crash_restart"] / figures["hot_load"]
    table = "\n".join(
        [
            SECTION,
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine} with "
            "`make bench-engine` (tests/bench/bench_engine_lifecycle.py). Times are seen from the",
            "management API (the agent heartbeats every second here), so they include up to one",
            "heartbeat of reporting delay.",
            "",
            "| Step | Seconds |",
            "|---|---|",
            f"| deployment created → engine ready (first start, files downloaded and verified) "
            f"| {figures['first_start']:.1f} |",
            f"| adapter hot-loaded at runtime (median of {ROUNDS}) | {figures['hot_load']:.1f} |",
            f"| adapter unloaded at runtime (median of {ROUNDS}) | {figures['unload']:.1f} |",
            f"| engine killed → ready again (agent restart) | {figures['crash_restart']:.1f} |",
            "",
            f"A runtime adapter change is **{ratio:.0f} times** faster than restarting the engine.",
            "",
        ]
    )
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n\n"
    if SECTION in existing:
        before, _, after = existing.partition(SECTION)
        rest = after.split("\n## ", 1)
        existing = before + ("## " + rest[1] if len(rest) > 1 else "")
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + table)
    return table


def main() -> None:
    python = engine_python()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as var:
        stack = start_stack(Path(var))
        stack.env["APPLIANCE_ENGINE_PYTHON"] = python
        try:
            figures = run(stack)
        finally:
            stack.stop()
    print(write(figures))


if __name__ == "__main__":
    main()
