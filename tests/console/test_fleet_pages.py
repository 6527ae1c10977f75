# ruff: noqa: F811 - the fleet fixtures imported below are arguments of the tests
"""The console's fleet pages: who may see and who may change nodes, enrollment tokens and
deployments (every page, every role); the nodes list, a node's GPUs charted from its stored
samples over the range asked for, revoking a node, and enrollment tokens. The deployments'
own behaviour is in test_fleet_deployment_pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.fleet import deployments, services
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import (
    Deployment,
    EngineInstance,
    EnrollmentToken,
    GpuSample,
    Node,
)
from appliance.registry.models import Adapter, BaseModel
from tests.conftest import actor
from tests.fleet.conftest import (  # noqa: F401 - fixtures
    approved_adapters,
    approved_model,
    enroll,
    gpu_reading,
)

pytestmark = pytest.mark.django_db

Enroll = Callable[..., tuple[Node, str]]
VIEW_PAGES = ["nodes", "node", "deployments", "deployment", "deployment-engines"]
MANAGE_PAGES = [
    "node-revoke",
    "enrollment-tokens",
    "enrollment-token-revoke",
    "deployment-new",
    "deployment-adapters",
    "deployment-remove",
]


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def world(
    enroll: Enroll,
    operator: User,
    approved_model: BaseModel,
    approved_adapters: list[Adapter],
) -> dict[str, Any]:
    """A node with two GPUs, a usable enrollment token, and a deployment on the node."""
    node, credential = enroll("gpu-1", gpus=[gpu_reading(0), gpu_reading(1)])
    token, _ = services.enrollment_token_create(actor=actor(operator), name="spare")
    deployment = deployments.deployment_create(
        actor=actor(operator), name="chat", model=approved_model, adapters=approved_adapters[:1]
    )
    return {"node": node, "credential": credential, "token": token, "deployment": deployment}


def url(name: str, world: dict[str, Any]) -> str:
    if name.startswith("node-") or name == "node":
        return reverse(f"console:{name}", args=[world["node"].pk])
    if name == "enrollment-token-revoke":
        return reverse(f"console:{name}", args=[world["token"].pk])
    if name == "deployment" or (name.startswith("deployment-") and name != "deployment-new"):
        return reverse(f"console:{name}", args=[world["deployment"].pk])
    return reverse(f"console:{name}")


def fleet_state() -> dict[str, Any]:
    """Everything a refused change must leave as it was."""
    return {
        "nodes": list(Node.objects.values_list("pk", "status", "revoked_at").order_by("pk")),
        "tokens": list(EnrollmentToken.objects.values_list("pk", "revoked_at").order_by("pk")),
        "deployments": list(
            Deployment.objects.values_list("pk", "name", "status", "updated_at").order_by("pk")
        ),
        "adapters": sorted(
            Deployment.adapters.through.objects.values_list("deployment_id", "adapter_id")
        ),
        "engines": sorted(
            (str(pk), desired)
            for pk, desired in EngineInstance.objects.values_list("pk", "desired_state")
        ),
        "audit": AuditEvent.objects.count(),
    }


def audited(action: str, user: User) -> AuditEvent:
    """The latest event of this action, which must name the person as its actor."""
    event = AuditEvent.objects.filter(action=action).latest("seq")
    assert (event.actor_kind, event.actor_id, event.actor_label) == (
        "user",
        str(user.pk),
        user.username,
    )
    return event


def html(response: Any) -> str:
    return response.content.decode()


# --- who may see and change what ----------------------------------------------------------------


@pytest.mark.parametrize("name", VIEW_PAGES)
def test_fleet_pages_are_shown_to_admins_operators_and_auditors_only(
    name: str,
    world: dict[str, Any],
    console_as: Any,
    admin: User,
    operator: User,
    auditor: User,
    app_owner: User,
) -> None:
    for user, status in ((admin, 200), (operator, 200), (auditor, 200), (app_owner, 403)):
        response = console_as(user).get(url(name, world))
        assert response.status_code == status, (user.role, name)
    assert "may not view nodes, GPUs and deployments" in html(
        console_as(app_owner).get(url(name, world))
    )


@pytest.mark.parametrize("name", MANAGE_PAGES)
def test_fleet_forms_and_confirmations_are_shown_to_fleet_managers_only(
    name: str,
    world: dict[str, Any],
    console_as: Any,
    admin: User,
    operator: User,
    auditor: User,
    app_owner: User,
) -> None:
    for user, status in ((admin, 200), (operator, 200), (auditor, 403), (app_owner, 403)):
        response = console_as(user).get(url(name, world))
        assert response.status_code == status, (user.role, name)


@pytest.mark.parametrize("name", VIEW_PAGES + MANAGE_PAGES)
def test_anonymous_visitor_is_sent_to_sign_in(name: str, world: dict[str, Any]) -> None:
    for method in ("get", "post"):
        response = getattr(Client(), method)(url(name, world))
        assert response.status_code == 302
        assert response["Location"].startswith("/console/sign-in?next=")


@pytest.mark.parametrize("name", MANAGE_PAGES)
def test_auditor_and_app_owner_may_not_change_the_fleet(
    name: str, world: dict[str, Any], console_as: Any, auditor: User, app_owner: User
) -> None:
    clients = [console_as(auditor), console_as(app_owner)]
    before = fleet_state()
    body = {"name": "x", "model_id": world["deployment"].model_id, "adapter_ids": []}

    for client in clients:
        response = client.post(url(name, world), body)
        assert response.status_code == 403

    assert fleet_state() == before


@pytest.mark.parametrize("name", MANAGE_PAGES)
def test_every_form_that_changes_the_fleet_posts_with_a_csrf_token(
    name: str, world: dict[str, Any], console_as: Any, operator: User
) -> None:
    page = html(console_as(operator).get(url(name, world)))

    forms = re.findall(r'<form method="post".*?</form>', page, re.S)
    assert forms
    assert all('name="csrfmiddlewaretoken"' in f for f in forms)


def test_pages_of_unknown_nodes_and_tokens_are_not_found(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    client = console_as(operator)
    for path in (
        reverse("console:node", args=[999]),
        reverse("console:node-revoke", args=[999]),
        reverse("console:enrollment-token-revoke", args=[999]),
    ):
        response = client.get(path)
        assert response.status_code == 404
        assert "There is no such" in html(response)


def test_change_buttons_are_not_offered_to_an_auditor(
    console_as: Any, auditor: User, operator: User, world: dict[str, Any]
) -> None:
    node_url = url("node", world)
    assert reverse("console:node-revoke", args=[world["node"].pk]) in html(
        console_as(operator).get(node_url)
    )
    page = html(console_as(auditor).get(node_url))
    assert reverse("console:node-revoke", args=[world["node"].pk]) not in page
    assert reverse("console:enrollment-tokens") not in html(
        console_as(auditor).get(reverse("console:nodes"))
    )


# --- nodes ------------------------------------------------------------------------------------


def test_nodes_list_shows_status_heartbeat_agent_gpus_and_engines(
    console_as: Any,
    auditor: User,
    world: dict[str, Any],
    enroll: Enroll,
) -> None:
    node = world["node"]
    engine = world["deployment"].instances.get()
    node_heartbeat(
        node=node,
        report={
            "agent_version": "1.4.2",
            "gpus": [gpu_reading(0), gpu_reading(1)],
            "engines": [{"instance": str(engine.pk), "state": "ready", "port": 8101}],
        },
    )
    enroll("cpu-1")

    page = html(console_as(auditor).get(reverse("console:nodes")))

    row = re.search(rf'<tr>\s*<td><a href="/console/nodes/{node.pk}">gpu-1</a>.*?</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(), re.S)
    assert cells[1:3] == ["gpu-1.local", '<span class="badge ok">Online</span>']
    assert "<time datetime=" in cells[3]
    assert cells[4:] == ["1.4.2", "2", "1 / 1"]
    assert "cpu-1" in page
    assert "2 nodes" in page


def test_nodes_list_filters_by_status_and_paginates(
    console_as: Any,
    operator: User,
    enroll: Enroll,
) -> None:
    node, _ = enroll("revoked-1")
    services.node_revoke(actor=actor(operator), node=node)
    for i in range(26):
        Node.objects.create(name=f"n{i:02d}", credential_prefix=f"p{i:02d}", credential_hash="0")
    client = console_as(operator)

    revoked = html(client.get(reverse("console:nodes"), {"status": "revoked"}))
    assert "revoked-1" in revoked
    assert "n00" not in revoked

    first = html(client.get(reverse("console:nodes")))
    assert "Page 1 of 2 (27 in all)" in first
    assert "n24" in first and "n25" not in first  # ordered by name
    second = html(client.get(reverse("console:nodes"), {"page": 2}))
    assert "n25" in second and "revoked-1" in second and "n24" not in second


def test_nodes_list_ignores_an_unknown_status_filter(
    console_as: Any,
    operator: User,
    enroll: Enroll,
) -> None:
    enroll("gpu-1")

    response = console_as(operator).get(reverse("console:nodes"), {"status": "bogus"})

    assert response.status_code == 200
    assert "gpu-1" in html(response)


# --- a node's GPUs and their charts ---------------------------------------------------------------


def charts_of(page: str) -> dict[str, str]:
    """Each chart's accessible description, by its title's start (e.g. "GPU 0 power")."""
    labels = re.findall(r'<svg class="chart" role="img" aria-label="([^"]+)"', page)
    return {re.split(r"[,:]", label)[0]: label for label in labels}


@pytest.fixture
def charted(enroll: Enroll) -> Node:
    """A node whose GPU 0 reported 10, 40 and 70 % over the last half hour (raw), with minute
    averages over the last day and hour averages over the last week."""
    node, _ = enroll("gpu-1")
    now = timezone.now()
    GpuSample.objects.all().delete()
    for minutes_ago, use in ((30, 10), (20, 40), (2, 70)):
        reading = {**gpu_reading(0), "utilization_gpu_pct": use, "temperature_c": 50 + use / 10}
        node_heartbeat(
            node=node, report={"gpus": [reading]}, now=now - timedelta(minutes=minutes_ago)
        )
    gpu = node.gpus.get()
    GpuSample.objects.create(gpu=gpu, resolution="raw", time=now - timedelta(hours=2), power_w=1)
    for hours_ago in (3, 5, 30):  # the last one is past the day
        GpuSample.objects.create(
            gpu=gpu, resolution="minute", time=now - timedelta(hours=hours_ago), power_w=200
        )
    for days_ago in (2, 6, 9):  # the last one is past the week
        GpuSample.objects.create(
            gpu=gpu, resolution="hour", time=now - timedelta(days=days_ago), power_w=300
        )
    return node


def test_node_page_charts_each_gpu_from_its_raw_readings_of_the_last_hour(
    console_as: Any, auditor: User, charted: Node
) -> None:
    response = console_as(auditor).get(reverse("console:node", args=[charted.pk]))

    assert response.status_code == 200
    page = html(response)
    assert "GPU 0 · NVIDIA H100 80GB HBM3" in page
    found = charts_of(page)
    assert set(found) == {
        "GPU 0 utilization",
        "GPU 0 memory used",
        "GPU 0 temperature",
        "GPU 0 power",
    }
    assert "3 readings, lowest 10 %, highest 70 %, latest 70 %." in found["GPU 0 utilization"]
    assert "latest 57 °C" in found["GPU 0 temperature"]
    assert "3 readings" in found["GPU 0 power"]  # the two-hour-old reading is outside the hour
    # Minutes of silence between heartbeats are gaps: each reading is a dot of its own.
    assert page.count('<circle class="line"') == 4 * 3


def test_node_page_joins_readings_a_heartbeat_apart_into_a_line(
    console_as: Any,
    operator: User,
    enroll: Enroll,
) -> None:
    node, _ = enroll("gpu-1")
    now = timezone.now()
    for seconds_ago in (40, 30, 20):
        node_heartbeat(
            node=node, report={"gpus": [gpu_reading(0)]}, now=now - timedelta(seconds=seconds_ago)
        )

    page = html(console_as(operator).get(reverse("console:node", args=[node.pk])))

    assert page.count('<polyline class="line"') == 4


def test_node_page_charts_minute_averages_for_a_day_and_hour_averages_for_a_week(
    console_as: Any, operator: User, charted: Node
) -> None:
    client = console_as(operator)
    path = reverse("console:node", args=[charted.pk])

    day = charts_of(html(client.get(path, {"range": "day"})))
    week = charts_of(html(client.get(path, {"range": "week"})))

    assert "2 readings, lowest 200 W, highest 200 W" in day["GPU 0 power"]
    assert "no readings" in day["GPU 0 utilization"]
    assert "2 readings, lowest 300 W, highest 300 W" in week["GPU 0 power"]


def test_node_page_with_an_unknown_range_shows_the_last_hour(
    console_as: Any, operator: User, charted: Node
) -> None:
    page = html(
        console_as(operator).get(reverse("console:node", args=[charted.pk]), {"range": "x"})
    )

    assert "3 readings" in charts_of(page)["GPU 0 utilization"]
    assert '<option value="hour" selected>Last hour</option>' in page


def test_node_page_lists_the_engines_placed_on_it(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    engine = world["deployment"].instances.get()
    node_heartbeat(
        node=world["node"],
        report={
            "gpus": [gpu_reading(0), gpu_reading(1)],
            "engines": [{"instance": str(engine.pk), "state": "failed", "last_error": "CUDA OOM"}],
        },
    )

    page = html(console_as(operator).get(url("node", world)))

    assert reverse("console:deployment", args=[world["deployment"].pk]) in page
    assert '<span class="badge bad">Failed</span>' in page
    assert "CUDA OOM" in page


def test_node_without_gpus_says_why(console_as: Any, operator: User, enroll: Enroll) -> None:
    node, _ = enroll("cpu-1")
    node_heartbeat(node=node, report={"gpus": [], "gpu_error": "NVML: driver not loaded"})

    page = html(console_as(operator).get(reverse("console:node", args=[node.pk])))

    assert "This node reports no GPUs" in page
    assert "NVML: driver not loaded" in page
    assert "<svg" not in page


# --- revoking a node ----------------------------------------------------------------------------


def test_revoking_a_node_asks_for_confirmation_first(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    client = console_as(operator)
    before = fleet_state()

    response = client.get(url("node-revoke", world))

    assert response.status_code == 200
    page = html(response)
    assert "Node gpu-1 (gpu-1.local) will be refused from its next call" in page
    assert "its 1 running engine will be stopped" in page
    assert '<button type="submit" class="danger">Revoke gpu-1</button>' in page
    assert fleet_state() == before


def test_revoking_a_node_cuts_it_off_and_stops_its_engines(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    client = console_as(operator)

    response = client.post(url("node-revoke", world))

    assert response.status_code == 303
    assert response["Location"] == url("node", world)
    node = Node.objects.get(pk=world["node"].pk)
    assert (node.status, node.revoked_at is not None) == ("revoked", True)
    assert set(EngineInstance.objects.values_list("desired_state", flat=True)) == {"stopped"}
    event = audited("node.revoke", operator)
    assert (event.object_type, event.object_id) == ("node", str(node.pk))
    assert event.details == {"name": "gpu-1", "engines_stopped": 1}
    page = html(client.get(response["Location"]))
    assert "Node gpu-1 was revoked" in page
    assert '<span class="badge bad">Revoked</span>' in page
    assert services.node_authenticate(credential=world["credential"]) is None


def test_revoking_a_revoked_node_again_changes_nothing(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    services.node_revoke(actor=actor(operator), node=world["node"])
    client = console_as(operator)
    before = fleet_state()

    response = client.post(url("node-revoke", world))

    assert response.status_code == 302
    assert fleet_state() == before


# --- enrollment tokens --------------------------------------------------------------------------


def test_creating_an_enrollment_token_shows_its_secret_once(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    path = reverse("console:enrollment-tokens")

    response = client.post(path, {"name": "rack-2 box 3", "expires_in_hours": "48"})

    assert response.status_code == 201
    token = EnrollmentToken.objects.get()
    assert (token.name, token.created_by, token.state) == ("rack-2 box 3", operator, "usable")
    assert timedelta(hours=47) < token.expires_at - timezone.now() <= timedelta(hours=48)
    secret = re.search(r'<p class="secret"><code>([^<]+)</code></p>', html(response)).group(1)  # type: ignore[union-attr]
    assert secret.startswith("enr_")
    assert secret not in token.token_hash
    services.node_enroll(token=secret, name="box-3")  # the secret works
    event = audited("enrollment_token.create", operator)
    assert event.details["prefix"] == token.prefix
    assert secret not in str(event.details)
    again = html(client.get(path))
    assert secret not in again
    assert token.prefix in again


def test_enrollment_token_without_a_name_or_with_a_bad_expiry_is_refused_at_the_fields(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    path = reverse("console:enrollment-tokens")
    before = fleet_state()

    for form, field, message in (
        ({"name": "", "expires_in_hours": ""}, "name", "at least 1 character"),
        ({"name": "box", "expires_in_hours": "soon"}, "expires_in_hours", "valid integer"),
        (
            {"name": "box", "expires_in_hours": "1000"},
            "expires_in_hours",
            "less than or equal to 168",
        ),
    ):
        response = client.post(path, form)
        assert response.status_code == 422, form
        page = html(response)
        error = re.search(rf'<p class="field-error" id="err_{field}">([^<]+)</p>', page)
        assert error is not None and message in error.group(1), page
        assert 'class="secret"' not in page

    assert fleet_state() == before


def test_revoking_an_enrollment_token_asks_first_then_revokes_it(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    client = console_as(operator)
    path = url("enrollment-token-revoke", world)
    token = world["token"]
    before = fleet_state()

    confirm = client.get(path)
    assert confirm.status_code == 200
    assert f"The token {token.prefix}… for &#x27;spare&#x27; will never enroll" in html(confirm)
    assert fleet_state() == before

    response = client.post(path)
    assert response.status_code == 303
    token.refresh_from_db()
    assert token.state == "revoked"
    assert audited("enrollment_token.revoke", operator).object_id == str(token.pk)
    assert f"Enrollment token {token.prefix} was revoked." in html(client.get(response["Location"]))


def test_a_used_enrollment_token_cannot_be_revoked(
    console_as: Any, operator: User, world: dict[str, Any]
) -> None:
    used = EnrollmentToken.objects.get(node=world["node"])
    client = console_as(operator)
    before = fleet_state()

    response = client.post(reverse("console:enrollment-token-revoke", args=[used.pk]))

    assert response.status_code == 409
    assert "This token was already used; revoke the node instead." in html(response)
    assert fleet_state() == before
