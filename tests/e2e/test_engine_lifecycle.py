"""End to end, with real processes: the control plane, the node agent and a real vLLM (CPU build)
serving the generated demo model. One engine is shared by the tests in this file, which run in
order: enroll → deploy with one adapter → load a second at runtime → unload one → the agent
restarts a killed engine → a tampered artifact is refused → removing the deployment stops it.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings

from appliance.agent.cache import hash_file
from appliance.fleet.heartbeats import engine_api_key
from tests.e2e.stack import SECRET_KEY, Stack, engine_python, start_stack, wait_for

pytestmark = pytest.mark.engine

ENGINE_START_SECONDS = 300  # 30-60 s here, more when the machine is busy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    python = engine_python()
    running = start_stack(tmp_path_factory.mktemp("appliance"))
    running.env["APPLIANCE_ENGINE_PYTHON"] = python
    try:
        yield running
    finally:
        running.stop()


class World:
    """What the ordered tests pass on: ids of what earlier steps made."""

    node_id: int
    deployment_id: int
    adapters: dict[str, int]


def engine_of(stack: Stack) -> dict[str, Any]:
    deployment = stack.api.get(f"/deployments/{World.deployment_id}").json()
    return deployment["engines"][0]


def engine_client(engine: dict[str, Any]) -> httpx.Client:
    with override_settings(SECRET_KEY=SECRET_KEY):
        key = engine_api_key(engine["id"])
    return httpx.Client(
        base_url=f"http://127.0.0.1:{engine['port']}",
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=30,
    )


def served_models(engine: dict[str, Any]) -> set[str]:
    with engine_client(engine) as client:
        return {m["id"] for m in client.get("/v1/models").json()["data"]}


def audit_actions(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    return stack.api.get("/audit/events", params={"action": prefix, "page_size": 200}).json()[
        "results"
    ]


def ready_with(stack: Stack, check: Any = None) -> Any:
    def probe() -> dict[str, Any] | None:
        engine = engine_of(stack)
        if engine["state"] == "ready" and (check is None or check(engine)):
            return engine
        return None

    return probe


def test_agent_enrolls_with_a_one_time_token(stack: Stack) -> None:
    created = stack.api.post("/enrollment-tokens", json={"name": "e2e-node"})
    assert created.status_code == 201, created.text
    token = created.json()["secret"]

    enrolled = stack.agent(
        "enroll",
        "--server",
        stack.url,
        "--name",
        "e2e-node",
        env={"APPLIANCE_ENROLLMENT_TOKEN": token},
    )
    assert enrolled.returncode == 0, enrolled.stderr
    credential_file = stack.var / "agent" / "node.json"
    assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    assert token not in enrolled.stdout + enrolled.stderr

    reused = stack.agent(
        "enroll",
        "--server",
        stack.url,
        "--name",
        "second",
        "--token",
        token,
        state_dir=stack.var / "agent-2",
    )
    assert reused.returncode != 0
    assert "enrollment_refused" in reused.stderr

    nodes = stack.api.get("/nodes").json()["items"]
    assert [(n["name"], n["status"]) for n in nodes] == [("e2e-node", "online")]
    World.node_id = nodes[0]["id"]
    stack.spawn(
        [
            sys.executable,
            "-m",
            "appliance.agent.cli",
            "--state-dir",
            str(stack.var / "agent"),
            "run",
            "--engine-python",
            stack.env["APPLIANCE_ENGINE_PYTHON"],
            "--interval",
            "2",
        ],
        "agent.log",
    )


def test_deployment_starts_an_engine_serving_the_model_and_its_adapter(stack: Stack) -> None:
    adapters = stack.api.get("/adapters").json()["items"]
    World.adapters = {a["name"]: a["id"] for a in adapters}
    model = stack.api.get("/models", params={"q": "demo-llama"}).json()["items"][0]
    created = stack.api.post(
        "/deployments",
        json={
            "name": "clinic-notes",
            "model_id": model["id"],
            "adapter_ids": [World.adapters["demo-triage"]],
            "device": "cpu",
            "node_id": World.node_id,
            "max_model_len": 512,
            "max_loras": 2,
            "max_lora_rank": 8,
        },
    )
    assert created.status_code == 201, created.text
    World.deployment_id = created.json()["id"]

    engine = wait_for("the engine to be ready", ready_with(stack), ENGINE_START_SECONDS, 2)

    assert engine["loaded_adapters"] == ["demo-triage"]
    assert engine["engine_version"]
    assert served_models(engine) == {"clinic-notes", "demo-triage"}
    unauthenticated = httpx.get(f"http://127.0.0.1:{engine['port']}/v1/models", trust_env=False)
    assert unauthenticated.status_code == 401
    with engine_client(engine) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={
                "model": "demo-triage",
                "messages": [{"role": "user", "content": "Summarise the discharge note."}],
                "max_tokens": 8,
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
    ready_events = audit_actions(stack, "engine.ready")
    assert ready_events and ready_events[0]["actor_kind"] == "node"


def test_a_second_adapter_is_loaded_at_runtime_without_a_restart(stack: Stack) -> None:
    before = engine_of(stack)
    patched = stack.api.patch(
        f"/deployments/{World.deployment_id}",
        json={"adapter_ids": [World.adapters["demo-triage"], World.adapters["demo-billing"]]},
    )
    assert patched.status_code == 200, patched.text

    engine = wait_for(
        "demo-billing to be loaded",
        ready_with(stack, lambda e: e["loaded_adapters"] == ["demo-billing", "demo-triage"]),
        60,
    )

    assert served_models(engine) == {"clinic-notes", "demo-triage", "demo-billing"}
    assert (engine["pid"], engine["restarts"]) == (before["pid"], before["restarts"])
    assert audit_actions(stack, "engine.adapter_load")[0]["details"]["adapter"] == "demo-billing"


def test_an_adapter_is_unloaded_at_runtime(stack: Stack) -> None:
    before = engine_of(stack)
    patched = stack.api.patch(
        f"/deployments/{World.deployment_id}",
        json={"adapter_ids": [World.adapters["demo-billing"]]},
    )
    assert patched.status_code == 200

    engine = wait_for(
        "demo-triage to be unloaded",
        ready_with(stack, lambda e: e["loaded_adapters"] == ["demo-billing"]),
        60,
    )

    assert served_models(engine) == {"clinic-notes", "demo-billing"}
    assert engine["pid"] == before["pid"]
    assert audit_actions(stack, "engine.adapter_unload")[0]["details"]["adapter"] == "demo-triage"


def test_a_killed_engine_is_restarted_by_the_agent(stack: Stack) -> None:
    before = engine_of(stack)
    os.kill(before["pid"], signal.SIGKILL)

    engine = wait_for(
        "the engine to come back",
        ready_with(stack, lambda e: e["restarts"] == before["restarts"] + 1),
        ENGINE_START_SECONDS,
        2,
    )

    assert engine["pid"] != before["pid"]
    assert served_models(engine) == {"clinic-notes", "demo-billing"}
    failed = audit_actions(stack, "engine.failed")
    assert failed and failed[0]["outcome"] == "failure"
    assert "exited with code -9" in failed[0]["details"]["error"]
    assert audit_actions(stack, "engine.restart")


def cached_blob(stack: Stack, sha256: str) -> Path:
    return stack.var / "agent" / "cache" / "blobs" / "sha256" / sha256[:2] / sha256


def test_a_tampered_artifact_is_refused_and_replaced_before_a_restart(stack: Stack) -> None:
    before = engine_of(stack)
    model = stack.api.get("/models", params={"q": "demo-llama"}).json()["items"][0]
    config = next(f for f in model["artifact"]["files"] if f["path"] == "config.json")
    blob = cached_blob(stack, config["sha256"])
    blob.chmod(0o600)
    blob.write_bytes(blob.read_bytes().replace(b"128", b"256", 1))  # a different hidden size
    os.kill(before["pid"], signal.SIGKILL)  # the next start must verify the cache

    wait_for(
        "the start on tampered files to be refused",
        lambda: audit_actions(stack, "engine.refused"),
        60,
    )
    engine = wait_for(
        "the engine to start on a fresh, verified copy",
        ready_with(stack, lambda e: e["pid"] != before["pid"]),
        ENGINE_START_SECONDS,
        2,
    )

    refused = audit_actions(stack, "engine.refused")[0]
    assert refused["outcome"] == "failure"
    assert "config.json" in refused["details"]["error"]
    assert hash_file(blob)[0] == config["sha256"]  # the agent fetched a good copy again
    assert served_models(engine) == {"clinic-notes", "demo-billing"}


def test_removing_the_deployment_stops_its_engine(stack: Stack) -> None:
    pid = engine_of(stack)["pid"]
    removed = stack.api.delete(f"/deployments/{World.deployment_id}")
    assert removed.status_code == 200
    assert removed.json()["status"] == "removed"

    wait_for("the engine to be stopped", lambda: engine_of(stack)["state"] == "stopped", 60)

    wait_for("the engine process to exit", lambda: not Path(f"/proc/{pid}").exists(), 30)
    assert audit_actions(stack, "engine.stopped")
