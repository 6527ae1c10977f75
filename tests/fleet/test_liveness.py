"""Node liveness: a node silent for longer than the heartbeat interval times the allowed misses is
marked offline by the periodic job (audited, system actor); its next heartbeat brings it back."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.celery import app
from appliance.fleet import services, tasks
from appliance.fleet.models import GpuSample, Node
from tests.conftest import actor
from tests.fleet.conftest import gpu_reading

pytestmark = pytest.mark.django_db

Enroll = Callable[..., tuple[Node, str]]
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _thirty_seconds_of_silence(settings: Any) -> None:
    settings.APPLIANCE_HEARTBEAT_SECONDS = 10
    settings.APPLIANCE_NODE_OFFLINE_AFTER_MISSED = 3


def silent_for(node: Node, seconds: float, *, now: datetime = NOW) -> Node:
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now - timedelta(seconds=seconds))
    node.refresh_from_db()
    return node


def offline_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="node.offline").order_by("seq"))


def heartbeat(credential: str) -> Any:
    return Client().post(
        "/api/agent/v1/heartbeat",
        data=json.dumps({"gpus": [gpu_reading(0)]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {credential}"},
    )


def test_a_node_silent_too_long_is_marked_offline_and_audited(enroll: Enroll) -> None:
    node = silent_for(enroll("quiet")[0], 31)

    marked = services.nodes_mark_offline(now=NOW)

    assert marked == ["quiet"]
    node.refresh_from_db()
    assert node.status == "offline"
    [event] = offline_events()
    assert event.actor_kind == "system"
    assert event.object_type == "node"
    assert event.object_id == str(node.pk)
    assert event.outcome == "success"
    assert event.details == {
        "name": "quiet",
        "last_heartbeat_at": (NOW - timedelta(seconds=31)).isoformat(),
    }


def test_a_node_within_its_allowance_stays_online(enroll: Enroll) -> None:
    recent = silent_for(enroll("recent")[0], 29)
    edge = silent_for(enroll("edge")[0], 30)  # exactly the allowance: not yet missed

    marked = services.nodes_mark_offline(now=NOW)

    assert marked == []
    assert Node.objects.get(pk=recent.pk).status == "online"
    assert Node.objects.get(pk=edge.pk).status == "online"
    assert offline_events() == []


def test_the_allowance_follows_the_settings(enroll: Enroll, settings: Any) -> None:
    node = silent_for(enroll("quiet")[0], 31)
    settings.APPLIANCE_NODE_OFFLINE_AFTER_MISSED = 4

    assert services.nodes_mark_offline(now=NOW) == []
    assert services.nodes_mark_offline(now=NOW + timedelta(seconds=10)) == ["quiet"]
    node.refresh_from_db()
    assert node.status == "offline"


def test_revoked_and_already_offline_nodes_are_left_alone(enroll: Enroll, operator: User) -> None:
    revoked = enroll("revoked")[0]
    services.node_revoke(actor=actor(operator), node=revoked)
    revoked = silent_for(revoked, 3600)
    quiet = silent_for(enroll("quiet")[0], 3600)
    assert services.nodes_mark_offline(now=NOW) == ["quiet"]

    again = services.nodes_mark_offline(now=NOW + timedelta(hours=1))

    assert again == []
    assert Node.objects.get(pk=revoked.pk).status == "revoked"
    assert Node.objects.get(pk=quiet.pk).status == "offline"
    assert [e.object_id for e in offline_events()] == [str(quiet.pk)]


def test_the_next_heartbeat_brings_an_offline_node_back_online(enroll: Enroll) -> None:
    node, credential = enroll("quiet", gpus=[gpu_reading(0)])
    silent_for(node, 120, now=timezone.now())
    assert services.nodes_mark_offline() == ["quiet"]

    response = heartbeat(credential)

    assert response.status_code == 200, response.content
    assert response.json()["node"]["status"] == "online"
    node.refresh_from_db()
    assert node.status == "online"
    assert node.last_heartbeat_at is not None
    assert timezone.now() - node.last_heartbeat_at < timedelta(seconds=10)
    [event] = AuditEvent.objects.filter(action="node.online")
    assert event.actor_kind == "node"
    assert event.actor_id == str(node.pk)
    assert event.object_id == str(node.pk)
    # An online node's heartbeats say nothing more.
    assert heartbeat(credential).status_code == 200
    assert AuditEvent.objects.filter(action="node.online").count() == 1


def test_the_periodic_tasks_are_registered_under_the_scheduled_names() -> None:
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    app.loader.import_default_modules()  # what a worker does at start (autodiscovery is lazy)

    assert {"fleet.mark_offline_nodes", "fleet.rollup_gpu_samples"} <= scheduled
    for name in scheduled:
        assert name in app.tasks, name
    assert tasks.mark_offline_nodes.name == "fleet.mark_offline_nodes"
    assert tasks.rollup_gpu_samples.name == "fleet.rollup_gpu_samples"


def test_the_mark_offline_task_marks_silent_nodes_offline(enroll: Enroll) -> None:
    quiet = silent_for(enroll("quiet")[0], 60, now=timezone.now())
    recent = enroll("recent")[0]

    result = tasks.mark_offline_nodes.delay()

    assert result.successful()
    assert Node.objects.get(pk=quiet.pk).status == "offline"
    assert Node.objects.get(pk=recent.pk).status == "online"
    assert [e.object_id for e in offline_events()] == [str(quiet.pk)]


def test_the_rollup_task_rolls_up_and_purges_gpu_samples(enroll: Enroll) -> None:
    node = enroll("busy", gpus=[gpu_reading(0)])[0]
    gpu = node.gpus.get()
    long_ago = timezone.now() - timedelta(hours=settings.APPLIANCE_GPU_RAW_RETENTION_HOURS + 2)
    GpuSample.objects.create(gpu=gpu, resolution="raw", time=long_ago, utilization_gpu_pct=50)

    result = tasks.rollup_gpu_samples.delay()

    assert result.successful()
    assert not GpuSample.objects.filter(resolution="raw", time=long_ago).exists()
    minute = GpuSample.objects.get(
        resolution="minute", time=long_ago.replace(second=0, microsecond=0)
    )
    assert minute.utilization_gpu_pct == 50
    assert AuditEvent.objects.filter(action="gpu_samples.purge").count() == 1
