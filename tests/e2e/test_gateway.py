"""End to end, with real processes: the OpenAI-compatible gateway (/v1) in front of two real vLLM
engines (CPU build) serving the generated demo model, called with the official ``openai`` client.

Two deployments of ``demo-llama`` (each with the adapter ``demo-triage``) run on one node, so the
gateway has two engines to choose from. The tests run in order: models → chat, completions and
the adapter → streaming → errors and limits → clients that go away (mid-stream, and before the
first chunk) → the audit trail and usage records → an engine killed under traffic (last: the
agent then restarts it). There is no usage API yet, so usage records are read from the SQLite
database, read-only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest

from appliance.agent.metrics import parse_engine_metrics
from tests.e2e.stack import Stack, engine_python, start_stack, wait_for

pytestmark = pytest.mark.engine

ENGINE_START_SECONDS = 400  # two engines start side by side: 60-80 s each here, more when busy
DEPLOYMENTS = ("demo-llama", "demo-llama-b")
ATTEMPTS = 5  # for checks that need the first chunk before the engine is done (see streaming)
MAX_MODEL_LEN = 1024  # the demo model's positions; room for streams long enough (seconds) to watch them arrive and abort
STREAM_TOKENS = 400  # about 2-4 s of generation here
# A marker in every prompt: it must never reach the audit log.
SECRET_PROMPT = "Patient Jane Roe-4711, born 1970, reports chest pain"
USER = [{"role": "user", "content": SECRET_PROMPT}]


class World:
    """What the ordered tests pass on: ids, keys and what earlier steps saw."""

    url: str
    node_id: int
    model: dict[str, Any]
    adapters: dict[str, dict[str, Any]]
    deployments: dict[str, int]
    app_id: int
    key: str
    limited_app_id: int
    limited_key_id: int
    limited_key: str
    request_ids: dict[str, str]
    completion_texts: list[str]


def gateway(key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{World.url}/v1",
        api_key=key,
        max_retries=0,
        timeout=120,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


def engines(stack: Stack) -> dict[str, dict[str, Any]]:
    """The engine of each deployment, by deployment name."""
    found = {}
    for name, deployment_id in World.deployments.items():
        deployment = stack.api.get(f"/deployments/{deployment_id}").json()
        found[name] = deployment["engines"][0]
    return found


def engine_metrics(engine: dict[str, Any]) -> dict[str, Any]:
    """The engine's own /metrics (vLLM serves it without a key), parsed as the agent does. A CPU
    engine busy generating on this 2-core machine can take several seconds to answer."""
    answer = httpx.get(f"http://127.0.0.1:{engine['port']}/metrics", timeout=30, trust_env=False)
    assert answer.status_code == 200
    return parse_engine_metrics(answer.text).to_dict()


def usage_records(stack: Stack) -> list[dict[str, Any]]:
    """Every usage record, oldest first, through the usage API (as an auditor would read them)."""
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": 200}
    while True:
        answer = stack.api.get("/usage/records", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        records += page["results"]
        if not page.get("next"):
            return sorted(records, key=lambda r: r["id"])
        params["cursor"] = parse_qs(urlsplit(page["next"]).query)["cursor"][0]


def inference_events(stack: Stack) -> list[dict[str, Any]]:
    answer = stack.api.get("/audit/events", params={"action": "inference", "page_size": 200})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def chat(client: openai.OpenAI, model: str = "demo-llama", **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=USER, **{"max_tokens": 4, **kwargs})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    python = engine_python()
    running = start_stack(tmp_path_factory.mktemp("appliance"))
    running.env["APPLIANCE_ENGINE_PYTHON"] = python
    World.url = running.url
    World.request_ids = {}
    World.completion_texts = []
    try:
        _serve_two_engines(running)
        yield running
    finally:
        running.stop()


def _serve_two_engines(stack: Stack) -> None:
    """Enroll and run the agent, deploy demo-llama twice (both with demo-triage), and make an
    application with a key and grants for demo-llama and demo-triage; wait for both engines."""
    token = stack.api.post("/enrollment-tokens", json={"name": "gw-node"}).json()["secret"]
    enrolled = stack.agent("enroll", "--server", stack.url, "--name", "gw-node", "--token", token)
    assert enrolled.returncode == 0, enrolled.stderr
    World.node_id = stack.api.get("/nodes").json()["items"][0]["id"]
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
    World.model = stack.api.get("/models", params={"q": "demo-llama"}).json()["items"][0]
    World.adapters = {a["name"]: a for a in stack.api.get("/adapters").json()["items"]}
    World.deployments = {}
    for name in DEPLOYMENTS:
        created = stack.api.post(
            "/deployments",
            json={
                "name": name,
                "model_id": World.model["id"],
                "adapter_ids": [World.adapters["demo-triage"]["id"]],
                "device": "cpu",
                "node_id": World.node_id,
                "max_model_len": MAX_MODEL_LEN,
                "max_loras": 2,
                "max_lora_rank": 8,
            },
        )
        assert created.status_code == 201, created.text
        World.deployments[name] = created.json()["id"]

    # While the engines start: the applications, their keys and grants.
    World.app_id, World.key = _application(stack, "clinic-notes", adapters=["demo-triage"])
    World.limited_app_id, World.limited_key = _application(stack, "limited", adapters=[])
    keys = stack.api.get(f"/applications/{World.limited_app_id}/keys").json()["items"]
    World.limited_key_id = keys[0]["id"]

    def both_ready() -> bool:
        return all(
            e["state"] == "ready" and e["loaded_adapters"] == ["demo-triage"]
            for e in engines(stack).values()
        )

    wait_for("both engines to be ready", both_ready, ENGINE_START_SECONDS, 2)


def _application(stack: Stack, name: str, adapters: list[str]) -> tuple[int, str]:
    created = stack.api.post("/applications", json={"name": name})
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    key = stack.api.post(f"/applications/{app_id}/keys", json={"name": f"{name}-key"})
    assert key.status_code == 201, key.text
    grants = [{"model_id": World.model["id"]}] + [
        {"model_id": World.model["id"], "adapter_id": World.adapters[a]["id"]} for a in adapters
    ]
    for grant in grants:
        answer = stack.api.post(f"/applications/{app_id}/grants", json=grant)
        assert answer.status_code == 201, answer.text
    return app_id, key.json()["secret"]


# 1. Models


def test_models_lists_exactly_what_the_key_is_granted(stack: Stack) -> None:
    client = gateway(World.key)

    listed = client.models.list()

    assert sorted(m.id for m in listed.data) == ["demo-llama", "demo-triage"]
    raw = httpx.get(
        f"{stack.url}/v1/models",
        headers={"Authorization": f"Bearer {World.key}"},
        trust_env=False,
    ).json()
    parents = {m["id"]: m["parent"] for m in raw["data"]}
    assert parents == {"demo-llama": None, "demo-triage": "demo-llama"}
    assert client.models.retrieve("demo-triage").id == "demo-triage"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("demo-billing")  # exists, not granted
    limited = gateway(World.limited_key).models.list()
    assert [m.id for m in limited.data] == ["demo-llama"]


# 2. Chat, completions, the adapter


def test_chat_completion_through_the_gateway(stack: Stack) -> None:
    completion = chat(gateway(World.key), max_tokens=8)

    assert completion.choices and completion.choices[0].message.role == "assistant"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion._request_id
    World.request_ids["chat"] = completion._request_id
    World.completion_texts.append(completion.choices[0].message.content or "")


def test_text_completion_through_the_gateway(stack: Stack) -> None:
    completion = gateway(World.key).completions.create(
        model="demo-llama", prompt=SECRET_PROMPT, max_tokens=8
    )

    assert completion.choices and completion.choices[0].text is not None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    World.request_ids["completion"] = completion._request_id
    World.completion_texts.append(completion.choices[0].text)


def test_chat_with_the_adapter(stack: Stack) -> None:
    completion = chat(gateway(World.key), model="demo-triage", max_tokens=8)

    assert completion.choices
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.model == "demo-triage"
    World.request_ids["adapter"] = completion._request_id
    World.completion_texts.append(completion.choices[0].message.content or "")


def test_responses_name_the_model_the_client_asked_for(stack: Stack) -> None:
    client = gateway(World.key)
    names = {chat(client, max_tokens=1).model for _ in range(8)}  # both engines, most likely

    assert names == {"demo-llama"}


# 3. Streaming


def _timed_stream(**kwargs: Any) -> list[tuple[float, Any]]:
    """Every chunk of a streamed chat completion, with the seconds since the request was sent."""
    client = gateway(World.key)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="demo-llama",
        messages=USER,
        stream=True,
        extra_body={"ignore_eos": True},
        **kwargs,
    )
    World.request_ids.setdefault("stream", stream.response.headers["x-request-id"])
    return [(time.monotonic() - started, chunk) for chunk in stream]


def test_streaming_chunks_arrive_as_they_are_generated(stack: Stack) -> None:
    """Chunks reach the client while the engine is still generating, not all at the end. The
    gateway writes the audit event before the first chunk; on this busy 2-core machine that has
    taken up to seconds, and a stream the engine finished meanwhile is tried again."""
    tries = []
    for _ in range(ATTEMPTS):
        arrivals = _timed_stream(max_tokens=STREAM_TOKENS)
        last = arrivals[-1][0]
        early = [t for t, _ in arrivals if t < last - 0.25]
        tries.append((len(early), round(arrivals[0][0], 3), round(last, 3)))
        if len(early) >= 10:
            break
    assert len(early) >= 10, f"(chunks 0.25 s before the end, first, last) per try: {tries}"

    content = [c for _, c in arrivals if c.choices and c.choices[0].delta.content]
    assert len(content) >= STREAM_TOKENS // 2  # a chunk per token or so, not one blob
    assert all(c.choices for _, c in arrivals)  # no usage-only chunk unless asked for
    assert all(c.usage is None for _, c in arrivals)
    assert arrivals[-1][1].choices[0].finish_reason == "length"


def test_streaming_usage_chunk_only_when_asked_for(stack: Stack) -> None:
    arrivals = _timed_stream(max_tokens=16, stream_options={"include_usage": True})

    final = arrivals[-1][1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens == 16
    assert all(c.choices for _, c in arrivals[:-1])


# 4. Errors and limits


def test_a_wrong_key_is_refused(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway("apk_not-a-real-key"))
    assert refused.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        gateway(World.key + "x").models.list()


def test_a_model_not_granted_or_unknown_is_not_found(stack: Stack) -> None:
    client = gateway(World.key)
    with pytest.raises(openai.NotFoundError) as not_granted:
        chat(client, model="demo-billing")
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(client, model="no-such-model")
    with pytest.raises(openai.NotFoundError):
        chat(gateway(World.limited_key), model="demo-triage")  # granted to the other app only

    assert not_granted.value.code == unknown.value.code == "model_not_found"
    assert "demo-billing" in not_granted.value.message


def test_a_key_in_the_query_string_is_refused(stack: Stack) -> None:
    answer = httpx.post(
        f"{stack.url}/v1/chat/completions",
        params={"api_key": World.key},
        json={"model": "demo-llama", "messages": USER, "max_tokens": 2},
        trust_env=False,
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "api_key_in_url"


def test_a_body_that_is_not_json_is_refused(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {World.key}"}
    form = httpx.post(
        f"{stack.url}/v1/chat/completions",
        data={"model": "demo-llama"},
        headers=headers,
        trust_env=False,
    )
    text = httpx.post(
        f"{stack.url}/v1/chat/completions",
        content=json.dumps({"model": "demo-llama", "messages": USER}),
        headers={**headers, "Content-Type": "text/plain"},
        trust_env=False,
    )

    assert (form.status_code, text.status_code) == (415, 415)
    assert text.json()["error"]["code"] == "unsupported_media_type"


def test_max_tokens_over_the_applications_limit(stack: Stack) -> None:
    client = gateway(World.limited_key)
    chat(client)  # the key is now resolved and cached by the gateway
    patched = stack.api.patch(
        f"/applications/{World.limited_app_id}", json={"max_tokens_per_request": 16}
    )
    assert patched.status_code == 200, patched.text

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        chat(client, max_tokens=17)
    assert refused.value.status_code == 422
    assert refused.value.code == "max_tokens_exceeded"
    capped = chat(client, max_tokens=openai.NOT_GIVEN, extra_body={"ignore_eos": True})
    assert capped.usage is not None and capped.usage.completion_tokens == 16


def test_requests_per_minute_limit(stack: Stack) -> None:
    patched = stack.api.patch(
        f"/applications/{World.limited_app_id}", json={"requests_per_minute": 2}
    )
    assert patched.status_code == 200, patched.text
    client = gateway(World.limited_key)

    refused = None
    for _ in range(6):  # 2 fit in a minute; a minute that turns meanwhile allows 2 more
        try:
            chat(client, max_tokens=1)
        except openai.RateLimitError as error:
            refused = error
            break

    assert refused is not None, "no 429 after 6 requests with a limit of 2 a minute"
    assert refused.status_code == 429
    assert refused.code == "requests_per_minute"
    assert 1 <= int(refused.response.headers["Retry-After"]) <= 60


def test_a_revoked_key_is_refused_at_the_next_request(stack: Stack) -> None:
    client = gateway(World.limited_key)
    client.models.list()  # works (and is cached) until the revocation
    revoked = stack.api.post(
        f"/applications/{World.limited_app_id}/keys/{World.limited_key_id}/revoke"
    )
    assert revoked.status_code == 200, revoked.text

    with pytest.raises(openai.AuthenticationError) as refused:
        chat(client, max_tokens=1)
    assert refused.value.code == "api_key_revoked"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


# 5. A client that goes away

LONG_TOKENS = MAX_MODEL_LEN - 64  # with the prompt: about 5 s of generation here


def _busy(running: list[dict[str, Any]]) -> dict[str, int]:
    return {e["id"]: engine_metrics(e)["requests_running"] for e in running}


def _generated(running: list[dict[str, Any]]) -> dict[str, int]:
    return {e["id"]: engine_metrics(e)["generation_tokens_total"] for e in running}


def _abandoned_stream() -> None:
    """Start a long stream, read one chunk, close it at once (asking an engine how busy it is
    first would let a starved engine finish while it answers)."""
    stream = gateway(World.key).chat.completions.create(
        model="demo-llama",
        messages=USER,
        stream=True,
        max_tokens=LONG_TOKENS,
        extra_body={"ignore_eos": True},
    )
    next(iter(stream))
    stream.close()


def _generated_since(running: list[dict[str, Any]], before: dict[str, int]) -> dict[str, int]:
    """Tokens each engine generated since ``before``, once all are idle again: LONG_TOKENS for
    the one that served an abandoned stream to its end, fewer if the gateway aborted it."""
    wait_for("the engines to stop generating", lambda: not any(_busy(running).values()), 30, 0.2)
    time.sleep(0.5)  # nothing more is generated once it is aborted
    after = _generated(running)
    return {e["id"]: after[e["id"]] - before[e["id"]] for e in running}


def _aborted(running: list[dict[str, Any]], busy: dict[str, int], before: dict[str, int]) -> int:
    """Tokens the engine seen busy generated for the abandoned request."""
    (engine,) = [e for e in running if busy[e["id"]] == 1]
    return _generated_since(running, before)[engine["id"]]


def _assert_recorded_as_left(stack: Stack, engine_id: str, known: set[int]) -> None:
    def recorded() -> list[dict[str, Any]]:
        return [r for r in usage_records(stack) if r["id"] not in known]

    (record,) = wait_for("the abandoned stream's usage record", recorded, 10, 0.5)
    assert (record["status"], record["error_code"]) == (499, "client_disconnected")
    assert record["stream"] == 1 and record["engine"] == engine_id


def test_a_client_that_disconnects_mid_stream_stops_the_generation(stack: Stack) -> None:
    """Read one chunk, close: the engine stops before the tokens asked for, and the gateway
    records a client that left (499). On this busy 2-core machine the first chunk can come only
    after the engine is done (the audit write before it has taken seconds): such a try shows
    nothing and is made again; if every try is like that, the test is skipped, not passed."""
    running = list(engines(stack).values())
    tries: list[dict[str, int]] = []
    for _ in range(ATTEMPTS):
        before = _generated(running)
        known = {r["id"] for r in usage_records(stack)}
        _abandoned_stream()
        generated = _generated_since(running, before)
        tries.append(generated)
        (engine_id,) = [i for i, n in generated.items() if n > 0]
        if generated[engine_id] < LONG_TOKENS:
            break
    else:
        pytest.skip(f"the first chunk came after the engine was done in every try: {tries}")
    # Tokens per engine in each try; the last try is the one the gateway stopped.
    assert 0 < generated[engine_id] < LONG_TOKENS, tries
    _assert_recorded_as_left(stack, engine_id, known)


def _hang_up_while_working(stack: Stack, running: list[dict[str, Any]]) -> dict[str, int] | None:
    """Send a long stream request on a bare socket, and close it as soon as an engine works on
    it, before reading anything (the gateway may still be writing the audit event). None if no
    engine was seen working on it within 20 s (a starved engine can report late). The engines
    are asked five times a second, not more: each answer costs them CPU on this 2-core machine."""
    body = json.dumps(
        {
            "model": "demo-llama",
            "messages": USER,
            "stream": True,
            "max_tokens": LONG_TOKENS,
            "ignore_eos": True,
        }
    ).encode()
    host, port = stack.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {World.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(head + body)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            busy = _busy(running)
            if any(busy.values()):
                return busy
            time.sleep(0.2)
    return None


def test_a_client_that_leaves_before_the_first_chunk_stops_the_generation(stack: Stack) -> None:
    """As above, for a client that hangs up before any answer."""
    running = list(engines(stack).values())
    tries: list[tuple[dict[str, int] | None, int | None]] = []
    generated: int | None = None
    for _ in range(ATTEMPTS):
        before = _generated(running)
        known = {r["id"] for r in usage_records(stack)}
        busy = _hang_up_while_working(stack, running)
        if busy is None:
            wait_for("the engines to be idle", lambda: not any(_busy(running).values()), 15)
            tries.append((busy, None))
            generated = None
            continue
        assert sorted(busy.values()) == [0, 1], busy
        generated = _aborted(running, busy, before)
        tries.append((busy, generated))
        if generated < LONG_TOKENS:
            break
    if all(n is None for _, n in tries):
        pytest.skip(f"no engine was seen working on the request in any try: {tries}")
    # (engines busy when the client left, tokens generated): the last try is the one that stopped.
    assert busy is not None and generated is not None and generated < LONG_TOKENS, tries

    (engine_id,) = [i for i, n in busy.items() if n == 1]
    _assert_recorded_as_left(stack, engine_id, known)


# 6. The audit trail and usage records


def test_every_inference_is_audited_with_the_weights_hash_and_no_text(stack: Stack) -> None:
    events = inference_events(stack)
    by_request = {e["request_id"]: e for e in events}

    for name in ("chat", "completion", "adapter", "stream"):
        event = by_request[World.request_ids[name]]
        assert event["outcome"] == "success"
        assert event["actor_kind"] == "application"
        assert event["actor_id"] == str(World.app_id)
        assert event["details"]["model"] == "demo-llama"
        assert event["details"]["model_sha256"] == World.model["artifact"]["digest"]
        assert event["details"]["node"] == "gw-node"
        assert event["details"]["deployment"] in DEPLOYMENTS
    adapter = by_request[World.request_ids["adapter"]]["details"]
    assert adapter["adapter"] == "demo-triage"
    assert adapter["adapter_sha256"] == World.adapters["demo-triage"]["artifact"]["digest"]
    denied = [e for e in events if e["details"]["error_code"] == "model_not_found"]
    assert len(denied) >= 3 and all(e["outcome"] == "denied" for e in denied)

    everything = json.dumps(events)
    assert SECRET_PROMPT not in everything
    assert "Jane" not in everything
    for text in World.completion_texts:
        if len(text.strip()) >= 8:
            assert text not in everything


def test_usage_records_count_the_tokens(stack: Stack) -> None:
    records = {r["request_id"]: r for r in usage_records(stack)}

    chat_record = records[World.request_ids["chat"]]
    assert chat_record["status"] == 200
    assert chat_record["prompt_tokens"] > 0 and chat_record["completion_tokens"] > 0
    assert chat_record["application_id"] == World.app_id
    assert chat_record["engine"] in {e["id"] for e in engines(stack).values()}
    assert records[World.request_ids["adapter"]]["adapter"] == "demo-triage"
    streamed = [
        r for r in usage_records(stack) if r["stream"] and r["completion_tokens"] == STREAM_TOKENS
    ]
    assert streamed and all(r["status"] == 200 for r in streamed)
    assert all(r["ttft_ms"] is not None and r["ttft_ms"] < r["latency_ms"] for r in streamed)
    assert World.request_ids["stream"] in {r["request_id"] for r in streamed}
    throttled = [
        r
        for r in usage_records(stack)
        if r["status"] == 429 and r["application_id"] == World.limited_app_id
    ]
    assert throttled and throttled[0]["error_code"] == "requests_per_minute"


# 6b. A route: rules pick the base model or the adapter, and the usage record says why


def test_a_route_sends_each_request_to_the_target_of_its_task_class(stack: Stack) -> None:
    api = stack.api
    for name in ("classification", "general"):
        made = api.post("/task-classes", json={"name": name})
        assert made.status_code == 201, made.text
    route = api.post(
        "/routes",
        json={
            "name": "clinic-router",
            "default_class": "general",
            "rules": [
                {"kind": "keyword", "value": "triage, classify", "task_class": "classification"}
            ],
            "tiers": [
                {
                    "task_class": "classification",
                    "model_id": World.model["id"],
                    "adapter_id": World.adapters["demo-triage"]["id"],
                },
                {"task_class": "general", "model_id": World.model["id"]},
            ],
        },
    )
    assert route.status_code == 201, route.text
    app = api.post("/applications", json={"name": "routed"}).json()
    granted = api.post(f"/applications/{app['id']}/grants", json={"route_id": route.json()["id"]})
    assert granted.status_code == 201, granted.text
    key = api.post(f"/applications/{app['id']}/keys", json={"name": "k"}).json()["secret"]
    client = gateway(key)
    asked = {
        "triage": "Triage this: " + SECRET_PROMPT,
        "general": "Write a kind note to " + SECRET_PROMPT,
    }
    answers = {
        name: client.chat.completions.with_raw_response.create(
            model="clinic-router", messages=[{"role": "user", "content": text}], max_tokens=4
        )
        for name, text in asked.items()
    }

    decisions = {
        name: (raw.headers["x-appliance-route-target"], raw.headers["x-appliance-task-class"])
        for name, raw in answers.items()
    }
    assert decisions == {
        "triage": ("demo-triage", "classification"),
        "general": ("demo-llama", "general"),
    }
    assert all(raw.parse().model == "clinic-router" for raw in answers.values())
    records = {r["request_id"]: r for r in usage_records(stack) if r["application_id"] == app["id"]}
    by_name = {name: records[raw.headers["x-request-id"]] for name, raw in answers.items()}
    assert (
        by_name["triage"]["route"],
        by_name["triage"]["task_class"],
        by_name["triage"]["route_reason"],
        by_name["triage"]["adapter"],
    ) == ("clinic-router", "classification", "rule 1 keyword", "demo-triage")
    assert (by_name["general"]["task_class"], by_name["general"]["route_reason"]) == (
        "general",
        "default",
    )
    assert all(r["status"] == 200 and r["completion_tokens"] > 0 for r in by_name.values())
    assert all(r["deployment"] in DEPLOYMENTS for r in by_name.values())
    assert SECRET_PROMPT not in json.dumps(list(by_name.values()))
    # A key granted the route may not call what it selects directly.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="demo-triage", messages=USER, max_tokens=4)


# 7. An engine dies under traffic


def test_requests_fail_over_when_an_engine_is_killed(stack: Stack) -> None:
    both = engines(stack)
    victim, survivor = both["demo-llama-b"], both["demo-llama"]
    client = gateway(World.key)
    with ThreadPoolExecutor(4) as pool:
        # Kept-alive connections to both engines: a pooled one to the killed engine fails with a
        # read error or reset, a new one is refused; both must be retried on the other engine.
        list(pool.map(lambda _: chat(client, max_tokens=1), range(4)))
        already = {r["id"] for r in usage_records(stack)}

        os.kill(victim["pid"], signal.SIGKILL)
        answers = list(pool.map(lambda _: chat(client, max_tokens=4), range(8)))

    assert all(a.choices and a.usage.completion_tokens > 0 for a in answers)
    records = [r for r in usage_records(stack) if r["id"] not in already]
    assert len(records) == 8
    assert all(r["status"] == 200 and r["engine"] == survivor["id"] for r in records)
    assert any(r["attempts"] == 2 for r in records), records  # a refused engine, then the other
