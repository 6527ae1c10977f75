"""Deployments through the API: creation places every engine or refuses with the reasons and writes
nothing; adapters change at runtime; removal stops the engines; reads show desired beside observed
state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.fleet import deployments
from appliance.fleet import services as fleet
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Deployment, EngineInstance, Node
from appliance.registry import services as registry
from appliance.registry.models import Adapter, BaseModel
from tests.conftest import actor
from tests.fleet.conftest import GIB, gpu_reading
from tests.support import write_adapter_dir, write_model_dir

pytestmark = pytest.mark.django_db

TWO_GPUS = [gpu_reading(0), gpu_reading(1)]


# --- helpers ---------------------------------------------------------------------------------


def fleet_state() -> dict[str, Any]:
    """Everything a refused deployment request must leave as it was. Denials are audited and
    api_as() audits the token it makes, so those two actions are not counted."""
    return {
        "deployments": list(
            Deployment.objects.values_list("pk", "name", "status", "updated_at").order_by("pk")
        ),
        "adapters": sorted(
            Deployment.adapters.through.objects.values_list("deployment_id", "adapter_id")
        ),
        "engines": sorted(
            (str(pk), desired, state)
            for pk, desired, state in EngineInstance.objects.values_list(
                "pk", "desired_state", "state"
            )
        ),
        "nodes": list(Node.objects.values_list("pk", "status").order_by("pk")),
        "audit": Counter(
            AuditEvent.objects.exclude(
                action__in=["permission.denied", "token.create"]
            ).values_list("action", flat=True)
        ),
    }


def assert_refused(response: Any, status: int, code: str, before: dict[str, Any]) -> None:
    """The answer has this status and error code, and the fleet is exactly as it was."""
    assert response.status_code == status, response.data
    assert response.data["code"] == code, response.data
    assert fleet_state() == before


@pytest.fixture
def node(enroll: Callable[..., tuple[Node, str]]) -> Node:
    """An online node with two empty 80 GiB GPUs."""
    return enroll("gpu-1", gpus=TWO_GPUS)[0]


@pytest.fixture
def pending_model(
    admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    with django_capture_on_commit_callbacks(execute=True):
        model, _ = registry.model_import(
            actor=actor(admin2),
            name="pending-model",
            path=str(write_model_dir(import_root / "pending-model")),
        )
    model.refresh_from_db()
    assert model.status == "pending"
    return model


def import_adapter(
    importer: User, name: str, base: BaseModel, root: Path, capture: Any, **shape: Any
) -> Adapter:
    with capture(execute=True):
        adapter, _ = registry.adapter_import(
            actor=actor(importer),
            name=name,
            base_model=base,
            path=str(write_adapter_dir(root / name, **shape)),
        )
    adapter.refresh_from_db()
    assert adapter.status == "pending"
    return adapter


@pytest.fixture
def foreign_adapter(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> Adapter:
    """An approved adapter of another approved base model."""
    capture = django_capture_on_commit_callbacks
    with capture(execute=True):
        other, _ = registry.model_import(
            actor=actor(admin2), name="other-base", path=str(write_model_dir(import_root / "o"))
        )
    other.refresh_from_db()
    registry.entry_approve(actor=actor(admin), entry=other)
    adapter = import_adapter(admin2, "other-lora", other, import_root, capture)
    return registry.entry_approve(actor=actor(admin), entry=adapter)  # type: ignore[return-value]


def body(model: BaseModel, **changes: Any) -> dict[str, Any]:
    return {"name": "chat", "model_id": model.pk, **changes}


def create(client: Any, model: BaseModel, **changes: Any) -> Any:
    return client.post("/deployments", body(model, **changes))


def report(node: Node, engines: list[dict[str, Any]], gpus: list[dict[str, Any]]) -> None:
    """A heartbeat from the node's agent."""
    node_heartbeat(node=node, report={"gpus": gpus, "engines": engines})


# --- create -----------------------------------------------------------------------------------


def test_deployment_is_created_with_every_replica_placed_as_pending(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    response = create(api_as(operator), approved_model, replicas=2, max_model_len=256)

    assert response.status_code == 201, response.data
    deployment = Deployment.objects.get(name="chat")
    assert (deployment.status, deployment.device, deployment.replicas) == ("active", "gpu", 2)
    assert (deployment.model, deployment.created_by, deployment.max_model_len) == (
        approved_model,
        operator,
        256,
    )
    engines = list(deployment.instances.order_by("replica"))
    # One 72 GiB engine per 80 GiB GPU: the two replicas take one GPU each.
    assert [(e.replica, e.node, e.gpu_indices) for e in engines] == [
        (0, node, [0]),
        (1, node, [1]),
    ]
    assert {(e.desired_state, e.state) for e in engines} == {("running", "pending")}
    assert all(e.reserved_bytes_per_gpu == int(80 * GIB * 0.9) for e in engines)
    shown = response.data
    assert (shown["id"], shown["name"], shown["model_name"]) == (
        deployment.pk,
        "chat",
        "base-model",
    )
    assert [(e["replica"], e["state"], e["node_name"]) for e in shown["engines"]] == [
        (0, "pending", "gpu-1"),
        (1, "pending", "gpu-1"),
    ]


def test_created_deployment_is_audited_with_its_settings_and_placement(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    response = create(api_as(operator), approved_model, dtype="bfloat16")

    assert response.status_code == 201, response.data
    event = AuditEvent.objects.get(action="deployment.create")
    assert event.actor_label.startswith("olga via token")
    assert (event.object_type, event.object_id) == ("deployment", str(response.data["id"]))
    assert event.details["name"] == "chat"
    assert event.details["model"] == "base-model"
    assert event.details["model_digest"] == approved_model.artifact.digest
    assert event.details["dtype"] == "bfloat16"
    assert event.details["placement"] == [{"node_id": node.pk, "gpus": [0]}]


def test_deployment_whose_audit_event_cannot_be_written_is_not_created(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    node: Node,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = api_as(operator)
    before = fleet_state()

    def broken_save(self: AuditEvent, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError("disk full")

    monkeypatch.setattr(AuditEvent, "save", broken_save)
    response = create(client, approved_model)
    monkeypatch.undo()

    assert_refused(response, 503, "audit_unavailable", before)
    assert not Deployment.objects.exists()
    assert not EngineInstance.objects.exists()


def test_deployment_with_approved_adapters_serves_them(
    api_as: Any, operator: User, approved_adapters: list[Adapter], node: Node
) -> None:
    base = approved_adapters[0].base_model
    ids = [a.pk for a in approved_adapters]
    response = create(api_as(operator), base, adapter_ids=ids)

    assert response.status_code == 201, response.data
    assert response.data["adapters"] == ["billing", "triage"]
    deployment = Deployment.objects.get(name="chat")
    assert sorted(a.name for a in deployment.adapters.all()) == ["billing", "triage"]
    assert AuditEvent.objects.get(action="deployment.create").details["adapters"] == [
        "billing",
        "triage",
    ]


def test_deployment_on_chosen_node_and_gpus_is_placed_there(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("gpu-0", gpus=TWO_GPUS)
    chosen = enroll("gpu-9", gpus=[gpu_reading(i) for i in range(4)])[0]

    response = create(
        api_as(operator),
        approved_model,
        node_id=chosen.pk,
        gpu_indices=[3, 1],
        tensor_parallel_size=2,
    )

    assert response.status_code == 201, response.data
    engine = EngineInstance.objects.get()
    assert (engine.node, engine.gpu_indices) == (chosen, [1, 3])
    assert response.data["node_id"] == chosen.pk
    assert response.data["gpu_indices"] == [3, 1]


def test_cpu_deployment_goes_to_the_node_running_fewest_engines(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    busy = enroll("cpu-a")[0]
    idle = enroll("cpu-b")[0]
    client = api_as(operator)
    assert create(client, approved_model, name="first", device="cpu").status_code == 201
    assert EngineInstance.objects.get().node == busy  # tie: by name

    response = create(client, approved_model, name="second", device="cpu")

    assert response.status_code == 201, response.data
    engine = EngineInstance.objects.get(deployment__name="second")
    assert (engine.node, engine.gpu_indices, engine.reserved_bytes_per_gpu) == (idle, [], 0)


# --- refusals ---------------------------------------------------------------------------------


def test_deployment_without_a_gpu_with_room_is_refused_with_reasons_and_nothing_is_written(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("busy", gpus=[gpu_reading(0, free_gib=30)])
    client = api_as(operator)
    before = fleet_state()

    response = create(client, approved_model)

    assert_refused(response, 409, "no_capacity", before)
    assert response.data["fields"]["placement"] == ["busy GPU 0: needs 72.0 GiB, 30.0 GiB free"]
    assert not Deployment.objects.exists()
    assert not EngineInstance.objects.exists()
    assert not AuditEvent.objects.filter(action="deployment.create").exists()


def test_gpu_deployment_on_a_fleet_without_gpus_is_refused(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("cpu-only")
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model)
    assert_refused(response, 409, "no_capacity", before)
    assert response.data["fields"]["placement"] == ["no online node has a GPU"]


def test_tensor_parallel_deployment_across_two_one_gpu_nodes_is_refused(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("left", gpus=[gpu_reading(0)])
    enroll("right", gpus=[gpu_reading(0)])
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, tensor_parallel_size=2)
    assert_refused(response, 409, "no_capacity", before)


def test_second_deployment_racing_for_the_last_gpu_is_refused(
    api_as: Any,
    operator: User,
    admin: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    solo = enroll("solo", gpus=[gpu_reading(0)])[0]
    first = create(api_as(operator), approved_model, name="first")
    assert first.status_code == 201, first.data
    # The agent has not started the first engine yet: NVML still sees the GPU empty.
    assert solo.gpus.get().memory_free_bytes == 80 * GIB
    client = api_as(admin)
    before = fleet_state()

    second = create(client, approved_model, name="second")

    assert_refused(second, 409, "no_capacity", before)
    assert second.data["fields"]["placement"] == ["solo GPU 0: needs 72.0 GiB, 8.0 GiB free"]
    assert list(EngineInstance.objects.values_list("deployment__name", flat=True)) == ["first"]


def test_placement_serialises_concurrent_creates_so_they_cannot_share_a_gpu(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    client = api_as(operator)
    with CaptureQueriesContext(connection) as queries:
        assert create(client, approved_model).status_code == 201
    if connection.vendor == "postgresql":
        # Postgres: the candidate nodes' rows are locked until the placement commits.
        assert any(
            'FROM "fleet_node"' in q["sql"] and "FOR UPDATE" in q["sql"]
            for q in queries.captured_queries
        )
    else:
        # SQLite has no row locks: BEGIN IMMEDIATE takes the database's write lock up front, so
        # two placements run one after the other.
        assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_freed_gpu_can_be_used_again_after_a_removal(
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    enroll: Callable[..., tuple[Node, str]],
) -> None:
    enroll("solo", gpus=[gpu_reading(0)])
    client = api_as(operator)
    first = create(client, approved_model, name="first")
    assert client.call("delete", f"/deployments/{first.data['id']}").status_code == 200

    second = create(client, approved_model, name="second")

    assert second.status_code == 201, second.data
    assert EngineInstance.objects.get(desired_state="running").deployment.name == "second"


def test_deployment_on_a_revoked_node_is_refused(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    fleet.node_revoke(actor=actor(operator), node=node)
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, node_id=node.pk)
    assert_refused(response, 409, "node_unavailable", before)


def test_unapproved_model_is_refused(
    api_as: Any, operator: User, pending_model: BaseModel, node: Node
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(client, pending_model)
    assert_refused(response, 409, "not_approved", before)


def test_unapproved_adapter_is_refused(
    api_as: Any,
    operator: User,
    admin2: User,
    approved_model: BaseModel,
    node: Node,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    pending = import_adapter(
        admin2, "pending-lora", approved_model, import_root, django_capture_on_commit_callbacks
    )
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, adapter_ids=[pending.pk])
    assert_refused(response, 409, "not_approved", before)


def test_adapter_of_another_base_model_is_refused(
    api_as: Any, operator: User, approved_model: BaseModel, foreign_adapter: Adapter, node: Node
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, adapter_ids=[foreign_adapter.pk])
    assert_refused(response, 422, "wrong_base_model", before)
    assert "adapter_ids" in response.data["fields"]


def test_adapter_with_a_rank_above_max_lora_rank_is_refused(
    api_as: Any, operator: User, approved_adapters: list[Adapter], node: Node
) -> None:
    billing = next(a for a in approved_adapters if a.name == "billing")  # rank 16
    client = api_as(operator)
    before = fleet_state()
    response = create(client, billing.base_model, adapter_ids=[billing.pk], max_lora_rank=8)
    assert_refused(response, 422, "validation_error", before)
    assert "max_lora_rank" in response.data["fields"]


def test_unknown_adapter_is_refused(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, adapter_ids=[999999])
    assert_refused(response, 422, "validation_error", before)
    assert response.data["fields"] == {"adapter_ids": ["No adapter 999999."]}


def test_duplicate_name_is_refused(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    client = api_as(operator)
    assert create(client, approved_model, name="chat").status_code == 201
    before = fleet_state()
    response = create(client, approved_model, name="chat")
    assert_refused(response, 409, "duplicate_name", before)


def test_name_taken_by_a_concurrent_request_after_the_check_is_a_conflict_not_a_crash(
    api_as: Any,
    operator: User,
    admin: User,
    approved_model: BaseModel,
    node: Node,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = deployments._place

    def place_then_lose_the_race(**kwargs: Any) -> Any:
        slots = place(**kwargs)
        # Another request committed a deployment of the same name meanwhile.
        Deployment.objects.create(name="chat", model=approved_model, device="cpu")
        return slots

    client = api_as(operator)
    monkeypatch.setattr(deployments, "_place", place_then_lose_the_race)
    response = create(client, approved_model, name="chat")
    monkeypatch.undo()

    assert response.status_code == 409, response.data
    assert response.data["code"] == "duplicate_name"
    assert not Deployment.objects.exists()  # the whole request rolled back
    assert not EngineInstance.objects.exists()
    assert not AuditEvent.objects.filter(action="deployment.create").exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dtype": "float8"}, "dtype"),
        ({"tensor_parallel_size": 3}, "tensor_parallel_size"),
        ({"max_lora_rank": 7}, "max_lora_rank"),
        ({"max_model_len": 513}, "max_model_len"),  # the model's context is 512
        ({"max_model_len": 8}, "max_model_len"),
        ({"max_model_len": 2**70}, "max_model_len"),  # beyond any column: 422, not 500
        ({"quantization": "int3"}, "quantization"),
        ({"gpu_memory_utilization": 0.99}, "gpu_memory_utilization"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 17}, "replicas"),
        ({"device": "tpu"}, "device"),
        ({"device": "cpu", "tensor_parallel_size": 2}, "device"),
        ({"name": "Not A DNS Name"}, "name"),
        ({"gpu_indices": [0]}, "gpu_indices"),  # GPUs without the node
        ({"owner": "olga"}, "owner"),  # unknown fields are refused, not ignored
        ({"status": "removed"}, "status"),
    ],
)
def test_bad_settings_are_refused(
    changes: dict[str, Any],
    field: str,
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    node: Node,
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, **changes)
    assert_refused(response, 422, "validation_error", before)
    assert field in response.data["fields"], response.data


def test_gpu_index_repeated_on_a_chosen_node_is_refused(
    api_as: Any, operator: User, approved_model: BaseModel, node: Node
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(
        client, approved_model, node_id=node.pk, gpu_indices=[1, 1], tensor_parallel_size=2
    )
    assert_refused(response, 422, "validation_error", before)
    assert "gpu_indices" in response.data["fields"]


@pytest.mark.parametrize(
    ("changes", "missing"),
    [({"model_id": 999999}, "model"), ({"node_id": 999999}, "node")],
)
def test_unknown_model_or_node_is_not_found(
    changes: dict[str, Any],
    missing: str,
    api_as: Any,
    operator: User,
    approved_model: BaseModel,
    node: Node,
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = create(client, approved_model, **changes)
    assert_refused(response, 404, "not_found", before)
    assert missing in response.data["detail"]


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_create_deployments(
    role: str, request: pytest.FixtureRequest, api_as: Any, approved_model: BaseModel, node: Node
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    response = create(client, approved_model)
    assert_refused(response, 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_anonymous_caller_may_not_create_deployments(
    api_as: Any, approved_model: BaseModel, node: Node
) -> None:
    before = fleet_state()
    response = create(api_as(None), approved_model)
    assert_refused(response, 401, "not_authenticated", before)


# --- change adapters --------------------------------------------------------------------------


@pytest.fixture
def deployment(
    api_as: Any, operator: User, approved_adapters: list[Adapter], node: Node
) -> Deployment:
    """An active deployment of the approved model serving the ``triage`` adapter."""
    triage = next(a for a in approved_adapters if a.name == "triage")
    response = create(api_as(operator), triage.base_model, adapter_ids=[triage.pk])
    assert response.status_code == 201, response.data
    return Deployment.objects.get(pk=response.data["id"])


def test_changing_adapters_records_what_was_added_and_removed(
    api_as: Any, admin: User, deployment: Deployment, approved_adapters: list[Adapter]
) -> None:
    billing = next(a for a in approved_adapters if a.name == "billing")
    engines_before = list(EngineInstance.objects.values_list("pk", "desired_state", "state"))

    response = api_as(admin).patch(f"/deployments/{deployment.pk}", {"adapter_ids": [billing.pk]})

    assert response.status_code == 200, response.data
    assert response.data["adapters"] == ["billing"]
    assert [a.name for a in deployment.adapters.all()] == ["billing"]
    event = AuditEvent.objects.get(action="deployment.adapters")
    assert event.actor_label.startswith("alice via token")
    assert event.object_id == str(deployment.pk)
    assert (event.details["added"], event.details["removed"]) == (["billing"], ["triage"])
    # Engines load and unload adapters at runtime: nothing is restarted or re-placed.
    assert list(EngineInstance.objects.values_list("pk", "desired_state", "state")) == (
        engines_before
    )


def test_setting_the_same_adapters_again_writes_no_event(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    ids = list(deployment.adapters.values_list("pk", flat=True))
    client = api_as(operator)
    before = fleet_state()

    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": ids})

    assert response.status_code == 200, response.data
    assert response.data["adapters"] == ["triage"]
    assert fleet_state() == before


def test_removing_every_adapter_is_allowed(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    response = api_as(operator).patch(f"/deployments/{deployment.pk}", {"adapter_ids": []})
    assert response.status_code == 200, response.data
    assert not deployment.adapters.exists()
    event = AuditEvent.objects.get(action="deployment.adapters")
    assert (event.details["added"], event.details["removed"]) == ([], ["triage"])


def test_patching_in_an_unapproved_adapter_is_refused(
    api_as: Any,
    operator: User,
    admin2: User,
    deployment: Deployment,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    pending = import_adapter(
        admin2, "pending-lora", deployment.model, import_root, django_capture_on_commit_callbacks
    )
    client = api_as(operator)
    before = fleet_state()
    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": [pending.pk]})
    assert_refused(response, 409, "not_approved", before)
    assert [a.name for a in deployment.adapters.all()] == ["triage"]


def test_patching_in_an_adapter_of_another_base_is_refused(
    api_as: Any, operator: User, deployment: Deployment, foreign_adapter: Adapter
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": [foreign_adapter.pk]})
    assert_refused(response, 422, "wrong_base_model", before)


def test_patching_anything_but_adapters_is_refused(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": [], "replicas": 4})
    assert_refused(response, 422, "validation_error", before)


def test_adapters_of_a_removed_deployment_cannot_change(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    client = api_as(operator)
    assert client.call("delete", f"/deployments/{deployment.pk}").status_code == 200
    before = fleet_state()
    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": []})
    assert_refused(response, 409, "removed", before)


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_change_adapters(
    role: str, request: pytest.FixtureRequest, api_as: Any, deployment: Deployment
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    response = client.patch(f"/deployments/{deployment.pk}", {"adapter_ids": []})
    assert_refused(response, 403, "permission_denied", before)


def test_changing_adapters_of_an_unknown_deployment_is_not_found(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.patch("/deployments/999999", {"adapter_ids": []})
    assert_refused(response, 404, "not_found", before)


# --- remove -----------------------------------------------------------------------------------


def test_removing_a_deployment_keeps_it_on_record_and_stops_its_engines(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    response = api_as(operator).call("delete", f"/deployments/{deployment.pk}")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "removed"
    deployment.refresh_from_db()
    assert deployment.status == "removed"
    assert deployment.removed_at is not None
    assert set(deployment.instances.values_list("desired_state", flat=True)) == {"stopped"}
    assert [e["desired_state"] for e in response.data["engines"]] == ["stopped"]
    event = AuditEvent.objects.get(action="deployment.remove")
    assert event.actor_label.startswith("olga via token")
    assert event.object_id == str(deployment.pk)
    assert event.details == {"name": "chat", "engines_stopped": 1}


def test_removed_deployment_is_no_longer_in_its_nodes_desired_state(
    api_as: Any, operator: User, deployment: Deployment, node: Node
) -> None:
    assert node_heartbeat(node=node, report={"gpus": TWO_GPUS})["engines"]
    api_as(operator).call("delete", f"/deployments/{deployment.pk}")
    assert node_heartbeat(node=node, report={"gpus": TWO_GPUS})["engines"] == []


def test_removing_twice_changes_nothing_the_second_time(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    client = api_as(operator)
    first = client.call("delete", f"/deployments/{deployment.pk}")
    assert first.status_code == 200
    before = fleet_state()

    again = client.call("delete", f"/deployments/{deployment.pk}")

    assert again.status_code == 200, again.data
    assert again.data["removed_at"] == first.data["removed_at"]
    assert fleet_state() == before
    assert AuditEvent.objects.filter(action="deployment.remove").count() == 1


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_remove_deployments(
    role: str, request: pytest.FixtureRequest, api_as: Any, deployment: Deployment
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    response = client.call("delete", f"/deployments/{deployment.pk}")
    assert_refused(response, 403, "permission_denied", before)


def test_removing_an_unknown_deployment_is_not_found(
    api_as: Any, operator: User, deployment: Deployment
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.call("delete", "/deployments/999999")
    assert_refused(response, 404, "not_found", before)


# --- read -------------------------------------------------------------------------------------


def test_deployment_shows_what_the_agent_reported_beside_what_was_asked(
    api_as: Any, auditor: User, deployment: Deployment, node: Node
) -> None:
    engine = deployment.instances.get()
    report(
        node,
        engines=[
            {
                "instance": str(engine.pk),
                "state": "ready",
                "port": 8101,
                "pid": 4242,
                "engine_version": "0.8.5",
                "restarts": 1,
                "loaded_adapters": ["triage"],
                "metrics": {"vllm:num_requests_running": 2},
            }
        ],
        gpus=[gpu_reading(0, free_gib=8), gpu_reading(1)],
    )

    response = api_as(auditor).get(f"/deployments/{deployment.pk}")

    assert response.status_code == 200, response.data
    shown = response.data
    assert (shown["name"], shown["status"], shown["replicas"], shown["adapters"]) == (
        "chat",
        "active",
        1,
        ["triage"],
    )
    assert shown["gpu_memory_utilization"] == 0.9
    [observed] = shown["engines"]
    assert observed["id"] == str(engine.pk)
    assert (observed["desired_state"], observed["state"]) == ("running", "ready")
    assert (observed["port"], observed["pid"], observed["engine_version"]) == (8101, 4242, "0.8.5")
    assert (observed["restarts"], observed["loaded_adapters"]) == (1, ["triage"])
    assert observed["metrics"] == {"vllm:num_requests_running": 2}
    assert observed["last_report_at"] is not None
    assert (observed["node_id"], observed["node_name"]) == (node.pk, "gpu-1")


def test_deployment_list_shows_every_deployment_with_its_engines(
    api_as: Any, operator: User, deployment: Deployment, approved_model: BaseModel
) -> None:
    client = api_as(operator)
    other = create(client, approved_model, name="another", device="cpu")
    assert other.status_code == 201

    response = client.get("/deployments")

    assert response.status_code == 200, response.data
    assert response.data["count"] == 2
    assert [(d["name"], d["device"], len(d["engines"])) for d in response.data["items"]] == [
        ("another", "cpu", 1),
        ("chat", "gpu", 1),
    ]


def test_deployment_list_can_be_filtered_by_status(
    api_as: Any, operator: User, deployment: Deployment, approved_model: BaseModel
) -> None:
    client = api_as(operator)
    create(client, approved_model, name="kept", device="cpu")
    client.call("delete", f"/deployments/{deployment.pk}")

    removed = client.get("/deployments?status=removed").data
    active = client.get("/deployments?status=active").data

    assert [d["name"] for d in removed["items"]] == ["chat"]
    assert [d["name"] for d in active["items"]] == ["kept"]


def test_app_owner_may_not_read_deployments(
    api_as: Any, app_owner: User, deployment: Deployment
) -> None:
    client = api_as(app_owner)
    assert client.get("/deployments").status_code == 403
    response = client.get(f"/deployments/{deployment.pk}")
    assert response.status_code == 403
    assert response.data["code"] == "permission_denied"


def test_unknown_deployment_is_not_found(api_as: Any, auditor: User) -> None:
    response = api_as(auditor).get("/deployments/999999")
    assert response.status_code == 404
    assert response.data["code"] == "not_found"
