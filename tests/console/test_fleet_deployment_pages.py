# ruff: noqa: F811 - the fleet fixtures imported below are arguments of the tests
"""The console's deployment pages: the list and a deployment's page show what was asked for
beside what the agents report (engine states, loaded adapters, load, errors), the engines
refresh in the background; creating (placed at once or refused at the fields with nothing
written), changing adapters and removing (after a confirmation) go through the same services
as the API and are audited with the person as the actor. Who may open each page is in
test_fleet_pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.fleet import deployments
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Deployment, EngineInstance, Node
from appliance.registry.models import Adapter, BaseModel
from tests.conftest import actor
from tests.console.test_fleet_pages import audited, fleet_state, html
from tests.fleet.conftest import (  # noqa: F401 - fixtures
    approved_adapters,
    approved_model,
    enroll,
    gpu_reading,
)

pytestmark = pytest.mark.django_db

TWO_GPUS = [gpu_reading(0), gpu_reading(1)]


@pytest.fixture
def node(enroll: Callable[..., tuple[Node, str]]) -> Node:
    """An online node with two empty 80 GiB GPUs."""
    return enroll("gpu-1", gpus=TWO_GPUS)[0]


@pytest.fixture
def chat(
    node: Node,
    operator: User,
    approved_adapters: list[Adapter],
) -> Deployment:
    """Two replicas of the approved model serving both adapters, one engine on each GPU."""
    return deployments.deployment_create(
        actor=actor(operator),
        name="chat",
        model=approved_adapters[0].base_model,
        adapters=approved_adapters,
        replicas=2,
    )


def report(node: Node, *engines: dict[str, Any]) -> None:
    node_heartbeat(node=node, report={"gpus": TWO_GPUS, "engines": list(engines)})


def one_ready_one_failed(chat: Deployment, node: Node) -> None:
    first, second = chat.instances.order_by("replica")
    report(
        node,
        {
            "instance": str(first.pk),
            "state": "ready",
            "port": 8101,
            "engine_version": "0.8.5",
            "loaded_adapters": ["triage"],
            "log_tail": ["INFO Started server process", "INFO Application startup <complete>."],
            "metrics": {
                "requests_running": 3,
                "requests_waiting": 1,
                "kv_cache_usage": 0.42,
                "ttft_seconds_sum": 1.5,
                "ttft_seconds_count": 10,
                "generation_tokens_total": 1234,
            },
        },
        {
            "instance": str(second.pk),
            "state": "failed",
            "restarts": 2,
            "last_error": "Traceback (most recent call last):\n"
            + "".join(f"  frame {i}\n" for i in range(40))
            + "torch.OutOfMemoryError: CUDA out of memory",
        },
    )


# --- reading ----------------------------------------------------------------------------------


def test_deployment_list_shows_replicas_beside_engine_states_adapters_and_last_error(
    console_as: Any, auditor: User, chat: Deployment, node: Node
) -> None:
    one_ready_one_failed(chat, node)

    page = html(console_as(auditor).get(reverse("console:deployments")))

    row = re.search(r'<a href="/console/deployments/\d+">chat</a>.*?</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(), re.S)
    assert cells[0:3] == ["base-model", "GPU", "any node"]
    assert cells[3] == "1 / 2"
    assert '<span class="badge bad">1 failed</span>' in cells[4]
    assert '<span class="badge ok">1 ready</span>' in cells[4]
    assert cells[5].startswith("billing, triage")
    assert "not loaded yet: billing" in cells[5]
    assert cells[6] == "Traceback (most recent call last):"


def test_deployment_list_shows_active_ones_unless_asked_for_removed_or_all(
    console_as: Any,
    operator: User,
    chat: Deployment,
    approved_model: BaseModel,
) -> None:
    gone = deployments.deployment_create(
        actor=actor(operator), name="old", model=approved_model, device="cpu"
    )
    deployments.deployment_remove(actor=actor(operator), deployment=gone)
    client = console_as(operator)
    path = reverse("console:deployments")

    def names(**query: str) -> list[str]:
        return re.findall(
            r'<a href="/console/deployments/\d+">([^<]+)</a>', html(client.get(path, query))
        )

    assert names() == ["chat"]
    assert names(status="removed") == ["old"]
    assert names(status="all") == ["chat", "old"]
    assert names(status="nonsense") == ["chat"]


def test_deployment_page_shows_settings_engines_load_and_the_tail_of_the_last_error(
    console_as: Any, auditor: User, chat: Deployment, node: Node
) -> None:
    one_ready_one_failed(chat, node)

    response = console_as(auditor).get(reverse("console:deployment", args=[chat.pk]))

    assert response.status_code == 200
    page = html(response)
    assert "<dt>Replicas</dt><dd>2</dd>" in page
    assert "<strong>1 of 2</strong> engines ready" in page
    assert '<span class="badge ok">Ready</span>' in page
    assert '<span class="badge bad">Failed</span>' in page
    assert "0.8.5" in page
    load = re.search(
        r"<tr>\s*<td class=\"num\">0</td>(.*?)</tr>", page.split("<h3>Load</h3>")[1], re.S
    )
    assert load is not None
    assert re.findall(r"<td class=\"num\">([^<]*)</td>", load.group(1)) == [
        "3",
        "1",
        "42 %",
        "150 ms",
        "—",
        "1234",
    ]
    assert "Last error of replica 1 on gpu-1" in page
    assert "torch.OutOfMemoryError: CUDA out of memory" in page
    assert "frame 39" in page and "frame 5\n" not in page  # the tail only
    assert "The last lines only." in page
    assert "Output of replica 0 on gpu-1 (last 2 lines" in page
    assert "INFO Started server process\nINFO Application startup &lt;complete&gt;." in page


def test_deployment_page_refreshes_its_engines_in_the_background_every_three_seconds(
    console_as: Any, operator: User, chat: Deployment, node: Node
) -> None:
    client = console_as(operator)
    page = html(client.get(reverse("console:deployment", args=[chat.pk])))
    fragment_url = reverse("console:deployment-engines", args=[chat.pk])

    poll = re.search(r'<div id="engines" ([^>]*)>', page)
    assert poll is not None
    assert f'hx-get="{fragment_url}"' in poll.group(1)
    assert 'hx-trigger="every 3s"' in poll.group(1)
    assert """hx-headers='{"X-Console-Background": "1"}'""" in poll.group(1)

    one_ready_one_failed(chat, node)
    fragment = client.get(fragment_url, headers={"X-Console-Background": "1"})
    assert fragment.status_code == 200
    body = html(fragment)
    assert "<html" not in body
    assert "<strong>1 of 2</strong> engines ready" in body


def test_removed_deployment_page_does_not_poll_and_offers_no_changes(
    console_as: Any, operator: User, chat: Deployment
) -> None:
    deployments.deployment_remove(actor=actor(operator), deployment=chat)

    page = html(console_as(operator).get(reverse("console:deployment", args=[chat.pk])))

    assert "hx-get" not in page
    assert reverse("console:deployment-remove", args=[chat.pk]) not in page
    assert reverse("console:deployment-adapters", args=[chat.pk]) not in page
    assert '<span class="badge muted">Removed</span>' in page


def test_pages_of_an_unknown_deployment_are_not_found(console_as: Any, operator: User) -> None:
    client = console_as(operator)
    for name in ("deployment", "deployment-engines", "deployment-adapters", "deployment-remove"):
        response = client.get(reverse(f"console:{name}", args=[999]))
        assert response.status_code == 404, name
        assert "There is no such deployment" in html(response)


# --- creating ---------------------------------------------------------------------------------


def form(model: BaseModel, **changes: Any) -> dict[str, Any]:
    """The new-deployment form as a browser sends it, defaults included."""
    return {
        "name": "chat",
        "model_id": str(model.pk),
        "device": "gpu",
        "node_id": "",
        "gpu_indices": "",
        "replicas": "1",
        "tensor_parallel_size": "1",
        "max_model_len": "",
        "gpu_memory_utilization": "0.9",
        "dtype": "auto",
        "quantization": "",
        "max_loras": "4",
        "max_lora_rank": "16",
        "description": "",
        **changes,
    }


def test_new_deployment_form_offers_approved_models_adapters_and_online_nodes(
    console_as: Any,
    operator: User,
    approved_adapters: list[Adapter],
    node: Node,
) -> None:
    page = html(console_as(operator).get(reverse("console:deployment-new")))

    assert f'<option value="{approved_adapters[0].base_model_id}">base-model</option>' in page
    assert "triage (for base-model, rank 8)" in page
    assert f'<option value="{node.pk}">gpu-1</option>' in page
    assert '<option value="16" selected>16</option>' in page
    for name in ("name", "model_id", "adapter_ids", "replicas", "max_model_len", "gpu_indices"):
        assert f'<label for="id_{name}">' in page


def test_creating_a_deployment_places_its_replicas_and_is_audited(
    console_as: Any,
    operator: User,
    approved_adapters: list[Adapter],
    node: Node,
) -> None:
    client = console_as(operator)
    model = approved_adapters[0].base_model
    body = form(
        model,
        adapter_ids=[str(approved_adapters[0].pk)],
        node_id=str(node.pk),
        gpu_indices="1",
        max_model_len="256",
        dtype="bfloat16",
        description="Triage chat",
    )

    response = client.post(reverse("console:deployment-new"), body)

    assert response.status_code == 303, html(response)
    deployment = Deployment.objects.get(name="chat")
    assert response["Location"] == reverse("console:deployment", args=[deployment.pk])
    assert (deployment.model, deployment.node, deployment.gpu_indices) == (model, node, [1])
    assert (deployment.max_model_len, deployment.dtype, deployment.created_by) == (
        256,
        "bfloat16",
        operator,
    )
    assert [a.name for a in deployment.adapters.all()] == ["triage"]
    assert [(e.node, e.gpu_indices, e.state) for e in deployment.instances.all()] == [
        (node, [1], "pending")
    ]
    event = audited("deployment.create", operator)
    assert (event.object_id, event.details["adapters"]) == (str(deployment.pk), ["triage"])
    assert "Deployment chat was created" in html(client.get(response["Location"]))


def test_cpu_deployment_can_be_created_on_a_cpu_node(
    console_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    cpu, _ = enroll("cpu-1")

    response = console_as(operator).post(
        reverse("console:deployment-new"), form(approved_model, device="cpu", replicas="2")
    )

    assert response.status_code == 303, html(response)
    assert [(e.node, e.gpu_indices) for e in EngineInstance.objects.order_by("replica")] == [
        (cpu, []),
        (cpu, []),
    ]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "Not OK!"}, "name", "Lower-case letters"),
        ({"model_id": ""}, "model_id", "Field required"),
        ({"model_id": "abc"}, "model_id", "valid integer"),
        ({"model_id": "999"}, "model_id", "No such model."),
        ({"replicas": "two"}, "replicas", "valid integer"),
        ({"replicas": "0"}, "replicas", "greater than or equal to 1"),
        ({"max_model_len": "8"}, "max_model_len", "greater than or equal to 16"),
        ({"gpu_memory_utilization": "lots"}, "gpu_memory_utilization", "valid number"),
        ({"gpu_indices": "0, x"}, "gpu_indices", "'x' is not a whole number."),
        ({"gpu_indices": "0"}, "gpu_indices", "Choose the node too"),
        ({"device": "tpu"}, "device", "'gpu' or 'cpu'"),
        ({"dtype": "int3"}, "dtype", "One of auto"),
        ({"node_id": "999"}, "node_id", "No such node."),
        ({"adapter_ids": ["abc"]}, "adapter_ids", "'abc' is not a valid choice."),
        ({"adapter_ids": ["999"]}, "adapter_ids", "No adapter 999."),
        ({"max_lora_rank": "8"}, "max_lora_rank", "At least 16 for billing."),
        ({"description": "x" * 2001}, "description", "at most 2000 characters"),
    ],
)
def test_bad_new_deployment_form_is_refused_at_the_field_and_writes_nothing(
    changes: dict[str, Any],
    field: str,
    message: str,
    console_as: Any,
    operator: User,
    approved_adapters: list[Adapter],
    node: Node,
) -> None:
    client = console_as(operator)
    before = fleet_state()
    body = form(approved_adapters[0].base_model, adapter_ids=[str(a.pk) for a in approved_adapters])

    response = client.post(reverse("console:deployment-new"), {**body, **changes})

    assert response.status_code == 422
    page = html(response)
    errors = re.findall(rf'<p class="field-error" id="err_{field}">([^<]+)</p>', page)
    assert any(message in e.replace("&#x27;", "'") for e in errors), (errors, page)
    assert fleet_state() == before


def test_deployment_with_no_room_is_refused_with_the_reasons_and_writes_nothing(
    console_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("busy", gpus=[gpu_reading(0, free_gib=30)])
    client = console_as(operator)
    before = fleet_state()

    response = client.post(reverse("console:deployment-new"), form(approved_model, name="big"))

    assert response.status_code == 409
    page = html(response)
    assert "No room for this deployment" in page
    assert "<li>busy GPU 0: needs 72.0 GiB, 30.0 GiB free</li>" in page
    assert 'value="big"' in page  # the form keeps what was typed
    assert fleet_state() == before


def test_deployment_with_a_taken_name_is_refused_and_writes_nothing(
    console_as: Any, operator: User, chat: Deployment
) -> None:
    client = console_as(operator)
    before = fleet_state()

    response = client.post(reverse("console:deployment-new"), form(chat.model, device="cpu"))

    assert response.status_code == 409
    assert "The name &#x27;chat&#x27; is already taken." in html(response)
    assert fleet_state() == before


# --- adapters ---------------------------------------------------------------------------------


def test_adapters_form_shows_the_models_adapters_with_the_served_ones_chosen(
    console_as: Any,
    operator: User,
    approved_adapters: list[Adapter],
    node: Node,
) -> None:
    triage, billing = approved_adapters
    deployment = deployments.deployment_create(
        actor=actor(operator), name="chat", model=triage.base_model, adapters=[triage]
    )

    page = html(
        console_as(operator).get(reverse("console:deployment-adapters", args=[deployment.pk]))
    )

    assert f'<option value="{triage.pk}" selected>triage' in page
    assert f'<option value="{billing.pk}">billing' in page
    assert '<label for="id_adapter_ids">Adapters</label>' in page


def test_changing_adapters_loads_and_unloads_them_and_is_audited(
    console_as: Any,
    operator: User,
    chat: Deployment,
    approved_adapters: list[Adapter],
) -> None:
    billing = approved_adapters[1]
    client = console_as(operator)

    response = client.post(
        reverse("console:deployment-adapters", args=[chat.pk]), {"adapter_ids": [str(billing.pk)]}
    )

    assert response.status_code == 303
    assert [a.name for a in chat.adapters.all()] == ["billing"]
    event = audited("deployment.adapters", operator)
    assert (event.details["added"], event.details["removed"]) == ([], ["triage"])
    assert "Adapters of chat saved" in html(client.get(response["Location"]))

    response = client.post(reverse("console:deployment-adapters", args=[chat.pk]), {})
    assert response.status_code == 303
    assert not chat.adapters.exists()


@pytest.mark.parametrize(
    ("chosen", "status", "message"),
    [
        (["abc"], 422, "&#x27;abc&#x27; is not a valid choice."),
        (["999"], 422, "No adapter 999."),
    ],
)
def test_bad_adapter_choice_is_refused_at_the_field_and_changes_nothing(
    chosen: list[str],
    status: int,
    message: str,
    console_as: Any,
    operator: User,
    chat: Deployment,
) -> None:
    client = console_as(operator)
    before = fleet_state()

    response = client.post(
        reverse("console:deployment-adapters", args=[chat.pk]), {"adapter_ids": chosen}
    )

    assert response.status_code == status
    assert f'<p class="field-error" id="err_adapter_ids">{message}</p>' in html(response)
    assert fleet_state() == before


def test_adapters_of_a_removed_deployment_cannot_change(
    console_as: Any, operator: User, chat: Deployment
) -> None:
    deployments.deployment_remove(actor=actor(operator), deployment=chat)
    client = console_as(operator)
    before = fleet_state()

    response = client.post(reverse("console:deployment-adapters", args=[chat.pk]), {})

    assert response.status_code == 409
    assert "This deployment was removed." in html(response)
    assert fleet_state() == before


# --- removing ---------------------------------------------------------------------------------


def test_removing_a_deployment_asks_for_confirmation_first(
    console_as: Any, operator: User, chat: Deployment
) -> None:
    client = console_as(operator)
    before = fleet_state()

    response = client.get(reverse("console:deployment-remove", args=[chat.pk]))

    assert response.status_code == 200
    page = html(response)
    assert "chat (base-model) will stop being served: its 2 engines will be stopped" in page
    assert '<button type="submit" class="danger">Remove chat</button>' in page
    assert fleet_state() == before


def test_removing_a_deployment_stops_its_engines_keeps_it_on_record_and_is_audited(
    console_as: Any, operator: User, chat: Deployment
) -> None:
    client = console_as(operator)

    response = client.post(reverse("console:deployment-remove", args=[chat.pk]))

    assert response.status_code == 303
    assert response["Location"] == reverse("console:deployment", args=[chat.pk])
    chat.refresh_from_db()
    assert (chat.status, chat.removed_at is not None) == ("removed", True)
    assert set(chat.instances.values_list("desired_state", flat=True)) == {"stopped"}
    event = audited("deployment.remove", operator)
    assert event.details == {"name": "chat", "engines_stopped": 2}
    assert "Deployment chat was removed" in html(client.get(response["Location"]))

    before = fleet_state()
    again = client.post(reverse("console:deployment-remove", args=[chat.pk]))
    assert again.status_code == 302
    assert fleet_state() == before
    assert AuditEvent.objects.filter(action="deployment.remove").count() == 1
