"""Chat, completions, embeddings, streaming and the model list through the gateway, with the
official OpenAI client, in front of fake engines; what is recorded of each request."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import httpx

from appliance.audit.models import AuditEvent
from appliance.fleet.heartbeats import engine_api_key
from appliance.gateway.models import UsageRecord

PROMPT = "Patient Jane Roe, DOB 1970-01-01, chest pain"  # must never be stored
MESSAGES = [{"role": "user", "content": PROMPT}]


def test_chat_reaches_the_engine_under_its_served_name_with_the_engine_key(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines()
    deployment = serve(approved_model, [engine], name="base-model-prod")
    _, key = application(grants=[approved_model])
    client = gateway.client(key)

    answer = gateway.run(
        lambda: client.chat.completions.create(model="base-model", messages=MESSAGES)
    )

    assert answer.choices[0].message.content == "ok ok ok "
    assert answer.usage.prompt_tokens == 7
    assert answer.model == "base-model"  # as asked, not the deployment's name
    sent = engine.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "base-model-prod"
    assert sent["body"]["messages"] == MESSAGES
    instance = deployment.instances.get()
    assert sent["authorization"] == f"Bearer {engine_api_key(instance.pk)}"


def test_completion_and_embeddings_are_proxied(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    serve(approved_model, [fake_engines()])
    _, key = application(grants=[approved_model])
    client = gateway.client(key)

    completion, embedding = gateway.run(
        lambda: (
            client.completions.create(model="base-model", prompt="Hello", max_tokens=3),
            client.embeddings.create(model="base-model", input="Hello"),
        )
    )

    assert completion.choices[0].text == "ok ok ok "
    assert embedding.data[0].embedding == [0.1, 0.2, 0.3]
    assert sorted(UsageRecord.objects.values_list("endpoint", flat=True)) == [
        "completions",
        "embeddings",
    ]


def test_an_adapter_is_called_by_its_own_name(
    gateway: Any,
    application: Any,
    approved_model: Any,
    approved_adapters: Any,
    serve: Any,
    fake_engines: Any,
) -> None:
    engine = fake_engines()
    triage = approved_adapters[0]
    serve(approved_model, [engine], adapters=[triage])
    _, key = application(grants=[triage])
    client = gateway.client(key)

    gateway.run(lambda: client.chat.completions.create(model="triage", messages=MESSAGES))

    assert engine.requests[-1]["body"]["model"] == "triage"
    record = UsageRecord.objects.get()
    assert (record.model, record.adapter) == ("base-model", "triage")


def test_the_model_list_shows_only_what_the_key_may_use(
    gateway: Any, application: Any, approved_model: Any, approved_adapters: Any
) -> None:
    triage, _billing = approved_adapters
    application(name="other", grants=[approved_model])
    _, key = application(grants=[triage])
    client = gateway.client(key)

    listed, raw = gateway.run(
        lambda: (
            client.models.list(),
            httpx.get(f"{gateway.url}/models", headers={"Authorization": f"Bearer {key}"}),
        )
    )

    assert [m.id for m in listed] == ["triage"]
    assert raw.json()["data"][0]["parent"] == "base-model"


def test_a_stream_arrives_in_chunks_and_its_usage_is_counted_but_not_sent_unasked(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines(chunks=5)
    serve(approved_model, [engine], name="base-model-eu")
    _, key = application(grants=[approved_model])
    client = gateway.client(key)

    def stream(**options: Any) -> list[Any]:
        return list(
            client.chat.completions.create(
                model="base-model", messages=MESSAGES, stream=True, **options
            )
        )

    plain, with_usage = gateway.run(
        lambda: (stream(), stream(stream_options={"include_usage": True}))
    )

    assert [c.choices[0].delta.content for c in plain] == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]
    assert {c.model for c in plain + with_usage} == {"base-model"}
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage.completion_tokens == 5
    assert engine.requests[0]["body"]["stream_options"] == {"include_usage": True}
    records = list(UsageRecord.objects.order_by("id"))
    assert [(r.stream, r.prompt_tokens, r.completion_tokens, r.status) for r in records] == [
        (True, 7, 5, 200),
        (True, 7, 5, 200),
    ]
    assert all(r.ttft_ms is not None and r.ttft_ms <= r.latency_ms for r in records)


def test_each_inference_is_audited_with_the_art_12_fields_and_no_text(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    serve(approved_model, [fake_engines()])
    app, key = application(grants=[approved_model])
    client = gateway.client(key)

    gateway.run(
        lambda: (
            client.chat.completions.create(model="base-model", messages=MESSAGES),
            list(
                client.chat.completions.create(model="base-model", messages=MESSAGES, stream=True)
            ),
        )
    )

    events = list(AuditEvent.objects.filter(action="inference").order_by("seq"))
    assert len(events) == 2
    event = events[0]
    assert (event.actor_kind, event.actor_id, event.outcome) == (
        "application",
        str(app.pk),
        "success",
    )
    details = event.details
    assert details["model"] == "base-model"
    assert details["model_sha256"] == approved_model.artifact.digest
    assert details["node"] and details["engine"]
    app.refresh_from_db()
    assert details["policy_version"] == app.policy_version == 2  # one grant since creation
    assert event.request_id == UsageRecord.objects.order_by("id").first().request_id
    everything = json.dumps(list(AuditEvent.objects.values()), default=str) + json.dumps(
        list(UsageRecord.objects.values()), default=str
    )
    assert "Jane Roe" not in everything
    assert key not in everything


def test_last_used_is_recorded_on_the_key(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    serve(approved_model, [fake_engines()])
    app, key = application(grants=[approved_model])
    client = gateway.client(key)

    gateway.run(lambda: client.chat.completions.create(model="base-model", messages=MESSAGES))

    assert app.keys.get().last_used_at is not None


def test_requests_committed_together_keep_their_own_request_ids(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    serve(approved_model, [fake_engines(delay=0.05)])
    _, key = application(grants=[approved_model])
    sent = [f"request-{n:04d}" for n in range(12)]
    body = {"model": "base-model", "messages": MESSAGES}

    def burst() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = pool.map(
                lambda rid: httpx.post(
                    f"{gateway.url}/chat/completions",
                    json=body,
                    timeout=20,
                    headers={"Authorization": f"Bearer {key}", "X-Request-ID": rid},
                ),
                sent,
            )
            return [a.status_code for a in answers]

    assert gateway.run(burst) == [200] * 12
    audited = dict(
        AuditEvent.objects.filter(action="inference").values_list("request_id", "details")
    )
    assert sorted(audited) == sent
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sent
    seqs = list(AuditEvent.objects.filter(action="inference").values_list("seq", flat=True))
    assert seqs == list(range(seqs[0], seqs[0] + 12))  # gap-free, whatever the batching
