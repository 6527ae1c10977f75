"""The agent API as node agents call it: only a node's own credential is accepted; a heartbeat
records GPUs and engine reports and answers with that node's engines; a node reaches only its own
engines and files; engine state changes are audited with the node as the actor."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from appliance.accounts.models import User
from appliance.accounts.services import token_create
from appliance.audit.models import AuditEvent
from appliance.fleet import services
from appliance.fleet.choices import DesiredState
from appliance.fleet.deployments import deployment_create, deployment_remove
from appliance.fleet.heartbeats import _apply_report, engine_api_key
from appliance.fleet.models import (
    Deployment,
    EngineInstance,
    EnrollmentToken,
    Gpu,
    GpuSample,
    Node,
)
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.registry.services import artifact_store
from tests.conftest import actor
from tests.fleet.conftest import gpu_reading

pytestmark = pytest.mark.django_db

AGENT = "/api/agent/v1"
Enroll = Callable[..., tuple[Node, str]]


# --- helpers ---------------------------------------------------------------------------------


class Agent:
    """The agent API as one node's agent sees it: JSON in, JSON out, its credential as Bearer."""

    def __init__(self, credential: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {credential}"} if credential else {}

    def heartbeat(self, body: dict[str, Any] | None = None) -> Any:
        response = self.client.post(
            f"{AGENT}/heartbeat",
            data=json.dumps(body or {}),
            content_type="application/json",
            headers=self.headers,
        )
        response.data = response.json() if response.content else None
        return response

    def blob(self, sha256: str, **headers: str) -> Any:
        return self.client.get(f"{AGENT}/blobs/{sha256}", headers={**self.headers, **headers})


def engine_report(instance: EngineInstance, state: str = "ready", **extra: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"instance": str(instance.pk), "state": state}
    if state == "ready":
        report.update(port=8001, pid=4242, engine_version="0.8.5")
    report.update(extra)
    return report


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def audit_counts() -> Counter[str]:
    return Counter(AuditEvent.objects.values_list("action", flat=True))


def engine_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith="engine.").order_by("seq"))


def instance_fields(instance: EngineInstance) -> dict[str, Any]:
    instance.refresh_from_db()
    return {
        field.attname: getattr(instance, field.attname)
        for field in EngineInstance._meta.concrete_fields
    }


def file_of(entry: BaseModel | Adapter, name: str) -> dict[str, Any]:
    artifact = entry.artifact
    assert artifact is not None
    return next(f for f in artifact.files if f["path"] == name)


def instance_of(deployment: Deployment) -> EngineInstance:
    return EngineInstance.objects.get(deployment=deployment)


@pytest.fixture
def node_a(enroll: Enroll) -> tuple[Node, str]:
    return enroll("node-a", gpus=[gpu_reading(0)])


@pytest.fixture
def node_b(enroll: Enroll) -> tuple[Node, str]:
    return enroll("node-b", gpus=[gpu_reading(0)])


@pytest.fixture
def deployed(
    operator: User,
    approved_model: BaseModel,
    approved_adapters: list[Adapter],
    node_a: tuple[Node, str],
    node_b: tuple[Node, str],
) -> tuple[Deployment, Deployment]:
    """``chat-a`` (model + triage) on node A, ``chat-b`` (model + billing) on node B."""
    triage, billing = approved_adapters
    on_a = deployment_create(
        actor=actor(operator),
        name="chat-a",
        model=approved_model,
        adapters=[triage],
        node=node_a[0],
    )
    on_b = deployment_create(
        actor=actor(operator),
        name="chat-b",
        model=approved_model,
        adapters=[billing],
        node=node_b[0],
    )
    return on_a, on_b


# --- authentication --------------------------------------------------------------------------

BAD_CREDENTIALS = ["none", "garbage", "forged", "revoked", "user_token", "enrollment_token"]


def bad_credential(kind: str, node: Node, operator: User) -> str | None:
    if kind == "none":
        return None
    if kind == "garbage":
        return "garbage"
    if kind == "forged":  # the node's real prefix with a made-up secret
        return f"nod_{node.credential_prefix}_{'A' * 43}"
    if kind == "user_token":
        return token_create(actor=actor(operator), name="script")[1]
    if kind == "enrollment_token":
        return services.enrollment_token_create(actor=actor(operator), name="spare")[1]
    raise AssertionError(kind)


@pytest.mark.parametrize("route", ["heartbeat", "blob"])
@pytest.mark.parametrize("kind", BAD_CREDENTIALS)
def test_agent_routes_refuse_anything_but_a_valid_node_credential(
    operator: User,
    deployed: tuple[Deployment, Deployment],
    node_a: tuple[Node, str],
    route: str,
    kind: str,
) -> None:
    node, credential = node_a
    if kind == "revoked":
        services.node_revoke(actor=actor(operator), node=node)
        presented: str | None = credential
    else:
        presented = bad_credential(kind, node, operator)
    sha256 = file_of(deployed[0].model, "model.safetensors")["sha256"]
    node.refresh_from_db()
    before = (Node.objects.get(pk=node.pk).last_heartbeat_at, GpuSample.objects.count())
    audit_before = audit_counts()

    agent = Agent(presented)
    if route == "heartbeat":
        response = agent.heartbeat({"gpus": [gpu_reading(0)]})
        data = response.data
    else:
        response = agent.blob(sha256)
        data = response.json()

    assert response.status_code == 401, data
    assert data["code"] == "not_authenticated"
    assert (Node.objects.get(pk=node.pk).last_heartbeat_at, GpuSample.objects.count()) == before
    assert audit_counts() == audit_before


def test_a_revoked_node_is_refused_and_its_engines_are_asked_to_stop(
    operator: User, deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    node, credential = node_a
    instance = instance_of(deployed[0])
    assert Agent(credential).heartbeat().status_code == 200

    services.node_revoke(actor=actor(operator), node=node)
    response = Agent(credential).heartbeat({"engines": [engine_report(instance)]})

    assert response.status_code == 401, response.data
    instance.refresh_from_db()
    assert instance.desired_state == "stopped"
    assert instance.state == "pending"  # the refused report changed nothing
    assert Node.objects.get(pk=node.pk).status == "revoked"


def test_a_credential_in_the_query_string_is_not_accepted(node_a: tuple[Node, str]) -> None:
    _, credential = node_a

    response = Client().post(
        f"{AGENT}/heartbeat?token={credential}", data="{}", content_type="application/json"
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/nodes"), ("get", "/deployments"), ("post", "/enrollment-tokens")],
)
def test_the_management_api_does_not_accept_a_node_credential(
    node_a: tuple[Node, str], method: str, path: str
) -> None:
    _, credential = node_a
    tokens = EnrollmentToken.objects.count()

    response = getattr(Client(), method)(
        f"/api/v1{path}",
        data=json.dumps({"name": "sneaky"}) if method == "post" else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {credential}"},
    )

    assert response.status_code == 401, response.content
    assert response.json()["code"] == "not_authenticated"
    assert EnrollmentToken.objects.count() == tokens


# --- heartbeat: GPUs -------------------------------------------------------------------------


def test_heartbeat_records_gpus_and_raw_samples_and_keeps_null_readings_null(
    node_a: tuple[Node, str],
) -> None:
    node, credential = node_a
    blind = {
        **gpu_reading(0),
        "utilization_gpu_pct": None,
        "utilization_memory_pct": None,
        "temperature_c": None,
        "power_w": None,
        "ecc_corrected": None,
        "ecc_uncorrected": None,
        "throttle_reasons": None,
    }
    throttled = {**gpu_reading(1, free_gib=20), "throttle_reasons": ["hw_slowdown"]}
    idle = {**gpu_reading(2), "throttle_reasons": ["gpu_idle", "applications_clocks_setting"]}
    samples_before = GpuSample.objects.count()

    response = Agent(credential).heartbeat(
        {
            "agent_version": "1.2.3",
            "hostname": "node-a.ward",
            "platform": {"vllm": "0.8.5"},
            "gpus": [blind, throttled, idle],
        }
    )

    assert response.status_code == 200, response.data
    assert response.data["node"] == {"id": node.pk, "name": "node-a", "status": "online"}
    assert response.data["heartbeat_seconds"] == settings.APPLIANCE_HEARTBEAT_SECONDS
    node.refresh_from_db()
    assert node.agent_version == "1.2.3"
    assert node.hostname == "node-a.ward"
    assert node.platform == {"vllm": "0.8.5", "gpu_error": None}
    gpu0, gpu1, gpu2 = Gpu.objects.filter(node=node).order_by("index")
    assert gpu0.uuid == "GPU-0000-test"
    assert gpu0.present and gpu1.present
    assert gpu0.last_sample["utilization_gpu_pct"] is None
    assert gpu0.last_sample["temperature_c"] is None
    assert gpu1.memory_free_bytes == 20 * 1024**3
    assert gpu1.last_seen_at == node.last_heartbeat_at
    assert GpuSample.objects.count() == samples_before + 3
    raw0 = GpuSample.objects.get(gpu=gpu0, resolution="raw", time=node.last_heartbeat_at)
    assert raw0.utilization_gpu_pct is None
    assert raw0.utilization_memory_pct is None
    assert raw0.temperature_c is None
    assert raw0.power_w is None
    assert raw0.ecc_corrected is None
    assert raw0.throttled is None
    assert raw0.memory_used_bytes == 0
    raw1 = GpuSample.objects.get(gpu=gpu1, resolution="raw", time=node.last_heartbeat_at)
    assert raw1.utilization_gpu_pct == 10
    assert raw1.power_w == 90.5
    assert raw1.throttled is True
    # Clocks lowered because the GPU is idle is not throttling.
    raw2 = GpuSample.objects.get(gpu=gpu2, resolution="raw", time=node.last_heartbeat_at)
    assert raw2.throttled is False


def test_a_gpu_missing_from_the_report_is_marked_absent_and_kept(enroll: Enroll) -> None:
    node, credential = enroll("node-a", gpus=[gpu_reading(0), gpu_reading(1)])

    response = Agent(credential).heartbeat({"gpus": [gpu_reading(0)]})

    assert response.status_code == 200, response.data
    present = dict(Gpu.objects.filter(node=node).values_list("index", "present"))
    assert present == {0: True, 1: False}
    [lost] = AuditEvent.objects.filter(action="gpu.lost")
    assert (lost.actor_kind, lost.outcome, lost.details["index"]) == ("node", "failure", 1)
    # It comes back when it is reported again.
    Agent(credential).heartbeat({"gpus": [gpu_reading(0), gpu_reading(1)]})
    assert set(Gpu.objects.filter(node=node).values_list("present", flat=True)) == {True}


def test_one_nodes_gpus_do_not_touch_another_nodes(
    node_a: tuple[Node, str], node_b: tuple[Node, str]
) -> None:
    node_b_gpus = list(Gpu.objects.filter(node=node_b[0]).values())

    Agent(node_a[1]).heartbeat({"gpus": []})

    assert list(Gpu.objects.filter(node=node_b[0]).values()) == node_b_gpus
    assert not Gpu.objects.filter(node=node_a[0], present=True).exists()


# --- heartbeat: desired engines --------------------------------------------------------------


def test_heartbeat_returns_only_this_nodes_engines_with_api_key_and_files(
    deployed: tuple[Deployment, Deployment],
    node_a: tuple[Node, str],
    node_b: tuple[Node, str],
    approved_model: BaseModel,
    approved_adapters: list[Adapter],
) -> None:
    on_a, on_b = deployed
    a, b = instance_of(on_a), instance_of(on_b)
    triage = approved_adapters[0]

    seen_by_a = Agent(node_a[1]).heartbeat()
    seen_by_b = Agent(node_b[1]).heartbeat()

    assert seen_by_a.status_code == 200, seen_by_a.data
    assert seen_by_b.status_code == 200, seen_by_b.data
    [engine] = seen_by_a.data["engines"]
    assert engine["instance"] == str(a.pk)
    assert engine["deployment"] == "chat-a"
    assert engine["replica"] == 0
    assert engine["device"] == "gpu"
    assert engine["gpu_indices"] == [0]
    assert engine["api_key"] == engine_api_key(a.pk)
    assert engine["api_key"].startswith("eng_")
    model_artifact = approved_model.artifact
    assert model_artifact is not None
    assert engine["model"] == {
        "name": "base-model",
        "digest": model_artifact.digest,
        "files": model_artifact.files,
    }
    assert {f["path"] for f in engine["model"]["files"]} >= {"config.json", "model.safetensors"}
    assert [ad["name"] for ad in engine["adapters"]] == ["triage"]
    assert engine["adapters"][0]["files"] == triage.artifact.files  # type: ignore[union-attr]
    assert engine["settings"]["gpu_memory_utilization"] == 0.9
    [other] = seen_by_b.data["engines"]
    assert other["instance"] == str(b.pk)
    assert [ad["name"] for ad in other["adapters"]] == ["billing"]
    # Neither answer names the other node's engine or its key.
    assert str(b.pk) not in json.dumps(seen_by_a.data)
    assert engine_api_key(b.pk) not in json.dumps(seen_by_a.data)
    assert str(a.pk) not in json.dumps(seen_by_b.data)
    assert engine_api_key(a.pk) not in json.dumps(seen_by_b.data)


def test_a_node_cannot_change_another_nodes_engine(
    deployed: tuple[Deployment, Deployment],
    node_a: tuple[Node, str],
    node_b: tuple[Node, str],
) -> None:
    a = instance_of(deployed[0])
    assert (
        Agent(node_a[1])
        .heartbeat({"engines": [engine_report(a, loaded_adapters=["triage"])]})
        .status_code
        == 200
    )
    before = instance_fields(a)
    audit_before = audit_counts()

    response = Agent(node_b[1]).heartbeat(
        {
            "gpus": [gpu_reading(0)],  # node B's own GPU, still there
            "engines": [
                engine_report(
                    a,
                    "failed",
                    port=9999,
                    pid=1,
                    restarts=7,
                    last_error="pwned",
                    loaded_adapters=["billing"],
                )
            ],
        }
    )

    assert response.status_code == 200, response.data
    assert instance_fields(a) == before
    assert a.state == "ready"
    assert a.port == 8001
    assert a.loaded_adapters == ["triage"]
    assert audit_counts() == audit_before
    assert str(a.pk) not in {e["instance"] for e in response.data["engines"]}


def test_a_report_about_an_unknown_engine_is_ignored(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    a = instance_of(deployed[0])
    before = instance_fields(a)
    audit_before = audit_counts()

    response = Agent(node_a[1]).heartbeat(
        {
            "gpus": [gpu_reading(0)],
            "engines": [{"instance": "00000000-0000-4000-8000-000000000000", "state": "ready"}],
        }
    )

    assert response.status_code == 200, response.data
    assert instance_fields(a) == before
    assert audit_counts() == audit_before


def test_engine_state_changes_are_audited_once_with_the_node_as_actor(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    node, credential = node_a
    instance = instance_of(deployed[0])
    agent = Agent(credential)

    def report(state: str, **extra: Any) -> None:
        response = agent.heartbeat({"engines": [engine_report(instance, state, **extra)]})
        assert response.status_code == 200, response.data

    report("downloading")
    report("starting", pid=4242)
    ready = {"loaded_adapters": ["triage"], "metrics": {"vllm:num_requests_running": 0}}
    report("ready", **ready)
    seen = len(engine_events())
    report("ready", **ready)  # the same again: nothing new happened
    assert len(engine_events()) == seen
    report("ready", loaded_adapters=[])
    report(
        "failed",
        restarts=1,
        last_error="CUDA error: out of memory\nTraceback (most recent call last):\n  secret.py",
    )
    report("failed", restarts=1, last_error="CUDA error: out of memory\nagain")  # no change
    report("ready", restarts=1, loaded_adapters=["triage"])

    events = engine_events()
    assert [e.action for e in events] == [
        "engine.downloading",
        "engine.starting",
        "engine.ready",
        "engine.adapter_load",
        "engine.adapter_unload",
        "engine.failed",
        "engine.restart",
        "engine.ready",
        "engine.adapter_load",
    ]
    for event in events:
        assert event.actor_kind == "node"
        assert event.actor_id == str(node.pk)
        assert event.object_type == "engine"
        assert event.object_id == str(instance.pk)
        assert event.details["deployment"] == "chat-a"
        assert event.details["node"] == "node-a"
    first_ready = events[2]
    assert first_ready.outcome == "success"
    assert first_ready.details["from"] == "starting"
    assert first_ready.details["port"] == 8001
    assert first_ready.details["engine_version"] == "0.8.5"
    assert events[3].details["adapter"] == "triage"
    assert events[4].details["adapter"] == "triage"
    failed = events[5]
    assert failed.outcome == "failure"
    assert failed.details["from"] == "ready"
    assert failed.details["error"] == "CUDA error: out of memory"
    assert "Traceback" not in json.dumps(failed.details)
    assert events[6].details["restarts"] == 1
    instance.refresh_from_db()
    assert instance.state == "ready"
    assert instance.restarts == 1
    assert instance.port == 8001
    assert instance.pid == 4242
    assert instance.loaded_adapters == ["triage"]
    assert instance.last_report_at is not None


def test_the_full_error_is_kept_on_the_engine_but_only_its_first_line_is_audited(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    instance = instance_of(deployed[0])
    error = "ValueError: bad rank\n" + "detail line\n" * 10

    Agent(node_a[1]).heartbeat({"engines": [engine_report(instance, "refused", last_error=error)]})

    instance.refresh_from_db()
    assert instance.state == "refused"
    assert instance.last_error == error
    event = AuditEvent.objects.get(action="engine.refused")
    assert event.outcome == "failure"
    assert event.details["error"] == "ValueError: bad rank"


def test_a_removed_deployments_engine_becomes_stopped_once_no_longer_reported(
    operator: User, deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    on_a = deployed[0]
    instance = instance_of(on_a)
    agent = Agent(node_a[1])
    agent.heartbeat({"engines": [engine_report(instance, loaded_adapters=["triage"])]})

    deployment_remove(actor=actor(operator), deployment=on_a)
    still_running = agent.heartbeat(
        {"engines": [engine_report(instance, loaded_adapters=["triage"])]}
    )

    assert still_running.status_code == 200, still_running.data
    assert still_running.data["engines"] == []
    instance.refresh_from_db()
    assert instance.desired_state == "stopped"
    assert instance.state == "ready"  # still running until the agent says it is gone
    assert not AuditEvent.objects.filter(action="engine.stopped").exists()

    gone = agent.heartbeat({"engines": []})

    assert gone.status_code == 200, gone.data
    instance.refresh_from_db()
    assert instance.state == "stopped"
    assert instance.port is None
    event = AuditEvent.objects.get(action="engine.stopped")
    assert event.details["from"] == "ready"
    assert event.actor_kind == "node"
    # Stopping is not an adapter unload, and a second heartbeat changes nothing.
    assert not AuditEvent.objects.filter(action="engine.adapter_unload").exists()
    events = audit_counts()
    agent.heartbeat({"engines": []})
    assert audit_counts() == events


def test_an_engine_still_wanted_but_not_reported_is_left_as_it_was(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    instance = instance_of(deployed[0])
    agent = Agent(node_a[1])
    agent.heartbeat({"engines": [engine_report(instance)]})
    before = instance_fields(instance)

    response = agent.heartbeat({"engines": []})

    assert response.status_code == 200, response.data
    assert [e["instance"] for e in response.data["engines"]] == [str(instance.pk)]
    assert instance_fields(instance) == before


@pytest.mark.parametrize(
    "engine",
    [
        {"instance": "not-a-uuid", "state": "ready"},
        {"instance": "00000000-0000-4000-8000-000000000000", "state": "exploded"},
        {"instance": "00000000-0000-4000-8000-000000000000", "state": "ready", "port": 70000},
        {"instance": "00000000-0000-4000-8000-000000000000", "state": "ready", "owner": "x"},
    ],
)
def test_a_bad_heartbeat_is_422_and_records_nothing(
    node_a: tuple[Node, str], engine: dict[str, Any]
) -> None:
    node, credential = node_a
    before = (Node.objects.get(pk=node.pk).last_heartbeat_at, GpuSample.objects.count())
    audit_before = audit_counts()

    response = Agent(credential).heartbeat({"gpus": [gpu_reading(0)], "engines": [engine]})

    assert response.status_code == 422, response.data
    assert response.data["code"] == "validation_error"
    assert (Node.objects.get(pk=node.pk).last_heartbeat_at, GpuSample.objects.count()) == before
    assert audit_counts() == audit_before


# --- blobs -----------------------------------------------------------------------------------


@pytest.fixture
def weights(deployed: tuple[Deployment, Deployment]) -> tuple[dict[str, Any], bytes]:
    """The base model's weights file (needed on both nodes) and its bytes."""
    entry = file_of(deployed[0].model, "model.safetensors")
    data = artifact_store().blob_path(entry["sha256"]).read_bytes()
    assert len(data) == entry["size"] > 1000
    return entry, data


def test_a_blob_download_streams_the_exact_bytes_and_is_audited(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes], import_root: Path
) -> None:
    entry, data = weights
    node, credential = node_a

    response = Agent(credential).blob(entry["sha256"])

    assert response.status_code == 200
    assert response["Content-Length"] == str(len(data))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "application/octet-stream"
    assert body_of(response) == data == (import_root / "base" / "model.safetensors").read_bytes()
    event = AuditEvent.objects.get(action="artifact.download")
    assert event.actor_kind == "node"
    assert event.actor_id == str(node.pk)
    assert event.object_id == entry["sha256"]
    assert event.details == {"size": len(data), "offset": 0}


def test_an_adapter_file_of_this_nodes_deployment_can_be_downloaded(
    node_a: tuple[Node, str], approved_adapters: list[Adapter], deployed: Any
) -> None:
    entry = file_of(approved_adapters[0], "adapter_model.safetensors")

    response = Agent(node_a[1]).blob(entry["sha256"])

    assert response.status_code == 200
    assert body_of(response) == artifact_store().blob_path(entry["sha256"]).read_bytes()


def test_a_range_request_resumes_with_the_tail(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes]
) -> None:
    entry, data = weights
    size = len(data)

    response = Agent(node_a[1]).blob(entry["sha256"], Range="bytes=100-")

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert response["Content-Length"] == str(size - 100)
    assert body_of(response) == data[100:]
    [event] = AuditEvent.objects.filter(action="artifact.download")
    assert event.details == {"size": size, "offset": 100}

    last = Agent(node_a[1]).blob(entry["sha256"], Range=f"bytes={size - 1}-")

    assert last.status_code == 206
    assert last["Content-Range"] == f"bytes {size - 1}-{size - 1}/{size}"
    assert body_of(last) == data[-1:]


def test_a_range_from_the_start_serves_the_whole_file_and_is_audited(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes]
) -> None:
    entry, data = weights

    response = Agent(node_a[1]).blob(entry["sha256"], Range="bytes=0-")

    assert response.status_code == 200
    assert body_of(response) == data
    [event] = AuditEvent.objects.filter(action="artifact.download")
    assert event.object_id == entry["sha256"]
    assert event.details == {"size": len(data), "offset": 0}


@pytest.mark.parametrize("header", ["bytes=0-99", "bytes=5-9,20-", "items=3-", "bytes=abc-"])
def test_a_range_other_than_a_resume_is_ignored_and_the_whole_file_served(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes], header: str
) -> None:
    entry, data = weights

    response = Agent(node_a[1]).blob(entry["sha256"], Range=header)

    assert response.status_code == 200
    assert body_of(response) == data


@pytest.mark.parametrize("start", ["size", "size+1"])
def test_a_range_starting_past_the_end_is_416(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes], start: str
) -> None:
    entry, data = weights
    offset = len(data) + (1 if start == "size+1" else 0)

    response = Agent(node_a[1]).blob(entry["sha256"], Range=f"bytes={offset}-")

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"
    assert not AuditEvent.objects.filter(action="artifact.download").exists()


def test_files_of_other_nodes_deployments_answer_404_like_unknown_ones(
    node_a: tuple[Node, str], approved_adapters: list[Adapter], deployed: Any
) -> None:
    billing = file_of(approved_adapters[1], "adapter_model.safetensors")  # only chat-b (node B)
    triage = file_of(approved_adapters[0], "adapter_model.safetensors")
    assert billing["sha256"] != triage["sha256"]
    assert artifact_store().blob_path(billing["sha256"]).is_file()
    agent = Agent(node_a[1])

    answers = {
        "other node's": agent.blob(billing["sha256"]),
        "unknown": agent.blob("0" * 64),
        "upper case": agent.blob(triage["sha256"].upper()),
        "short": agent.blob(triage["sha256"][:63]),
        "not hex": agent.blob("z" * 64),
    }

    for what, response in answers.items():
        assert response.status_code == 404, what
    bodies = {
        what: {k: v for k, v in response.json().items() if k != "request_id"}
        for what, response in answers.items()
    }
    assert len({json.dumps(b, sort_keys=True) for b in bodies.values()}) == 1, bodies
    assert bodies["unknown"]["code"] == "not_found"
    assert not AuditEvent.objects.filter(action="artifact.download").exists()


def test_files_of_a_removed_deployment_are_no_longer_served(
    operator: User,
    node_a: tuple[Node, str],
    approved_adapters: list[Adapter],
    deployed: tuple[Deployment, Deployment],
) -> None:
    triage = file_of(approved_adapters[0], "adapter_model.safetensors")  # only chat-a
    deployment_remove(actor=actor(operator), deployment=deployed[0])

    response = Agent(node_a[1]).blob(triage["sha256"])

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_blob_missing_from_the_store_is_404(
    node_a: tuple[Node, str], weights: tuple[dict[str, Any], bytes]
) -> None:
    entry, _ = weights
    artifact_store().blob_path(entry["sha256"]).unlink()

    response = Agent(node_a[1]).blob(entry["sha256"])

    assert response.status_code == 404
    assert response.json()["code"] == "blob_missing"
    assert not AuditEvent.objects.filter(action="artifact.download").exists()


# --- what a node may and may not make the control plane record ------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"gpus": [{"index": 0, "memory_total_bytes": 2**64}]},
        {"gpus": [{"index": 0, "ecc_corrected": 2**63}]},
        {"gpus": [{"index": 0, "power_w": "NaN"}]},
        {"engine_host": "0.0.0.0"},  # noqa: S104 - the wildcard is what must be refused
        {"engine_host": "8.8.8.8"},
        {"engine_host": "engines.example"},
    ],
)
def test_out_of_range_or_unsafe_readings_are_422_not_500(
    node_a: tuple[Node, str], bad: dict[str, Any]
) -> None:
    before = audit_counts()
    body = json.dumps(bad).replace('"NaN"', "NaN")  # a JSON NaN literal, as Python writes it
    response = Agent(node_a[1]).client.post(
        f"{AGENT}/heartbeat",
        data=body,
        content_type="application/json",
        headers=Agent(node_a[1]).headers,
    )
    assert response.status_code == 422
    assert audit_counts() == before


def test_the_engine_host_a_node_reports_is_kept_for_the_gateway(node_a: tuple[Node, str]) -> None:
    node, credential = node_a
    assert Agent(credential).heartbeat({"engine_host": "10.20.0.7"}).status_code == 200
    node.refresh_from_db()
    assert node.engine_host == "10.20.0.7"


def test_adapter_names_a_node_invents_are_not_recorded(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    instance = instance_of(deployed[0])
    names = ["triage", *(f"made-up-{i}" for i in range(50))]

    Agent(node_a[1]).heartbeat({"engines": [engine_report(instance, loaded_adapters=names)]})

    instance.refresh_from_db()
    assert instance.loaded_adapters == ["triage"]
    loads = AuditEvent.objects.filter(action="engine.adapter_load")
    assert [e.details["adapter"] for e in loads] == ["triage"]


def test_a_heartbeat_never_writes_back_the_desired_state(
    operator: User, deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    instance = instance_of(deployed[0])
    stale = EngineInstance.objects.get(pk=instance.pk)  # read before the removal commits
    deployment_remove(actor=actor(operator), deployment=deployed[0])

    _apply_report(node_a[0], stale, engine_report(stale))

    instance.refresh_from_db()
    assert instance.desired_state == DesiredState.STOPPED
    assert instance.state == "ready"  # the observation itself was recorded


def test_a_quarantined_model_is_no_longer_desired_nor_downloadable(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    model = deployed[0].model
    config = file_of(model, "config.json")
    BaseModel.objects.filter(pk=model.pk).update(status=EntryStatus.QUARANTINED)

    answer = Agent(node_a[1]).heartbeat({})

    assert answer.data["engines"] == []
    assert Agent(node_a[1]).blob(config["sha256"]).status_code == 404


def test_an_engines_last_output_lines_are_kept_and_overly_long_ones_refused(
    deployed: tuple[Deployment, Deployment], node_a: tuple[Node, str]
) -> None:
    a = instance_of(deployed[0])
    lines = ["INFO Starting vLLM API server", "INFO Application startup complete."]
    ok = Agent(node_a[1]).heartbeat({"engines": [engine_report(a, log_tail=lines)]})
    assert ok.status_code == 200, ok.data
    a.refresh_from_db()
    assert a.log_tail == lines

    too_long = Agent(node_a[1]).heartbeat({"engines": [engine_report(a, log_tail=["x" * 501])]})
    assert too_long.status_code == 422
    a.refresh_from_db()
    assert a.log_tail == lines
