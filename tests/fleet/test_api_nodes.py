"""Enrollment tokens, nodes and their GPU history through the API: tokens shown once and stored
hashed, revocation of tokens and nodes, GPU inventory and raw and rolled-up samples."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.errors import NotAuthenticated
from appliance.fleet import services as fleet
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import EngineInstance, EnrollmentToken, Gpu, GpuSample, Node
from appliance.fleet.telemetry import gpu_samples_rollup
from appliance.registry.models import BaseModel
from tests.conftest import actor
from tests.fleet.conftest import GIB, gpu_reading

pytestmark = pytest.mark.django_db

Enroll = Callable[..., tuple[Node, str]]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# --- helpers ---------------------------------------------------------------------------------


def fleet_state() -> dict[str, Any]:
    """Everything a refused request must leave as it was. Denials are audited and api_as()
    audits the token it makes, so those two actions are not counted."""
    return {
        "tokens": list(
            EnrollmentToken.objects.values_list("pk", "used_at", "revoked_at", "node_id").order_by(
                "pk"
            )
        ),
        "nodes": list(Node.objects.values_list("pk", "status", "revoked_at").order_by("pk")),
        "engines": sorted(
            (str(pk), desired)
            for pk, desired in EngineInstance.objects.values_list("pk", "desired_state")
        ),
        "audit": Counter(
            AuditEvent.objects.exclude(
                action__in=["permission.denied", "token.create"]
            ).values_list("action", flat=True)
        ),
    }


def assert_refused(response: Any, status: int, code: str, before: dict[str, Any]) -> None:
    assert response.status_code == status, response.data
    assert response.data["code"] == code, response.data
    assert fleet_state() == before


def raw_rows(table: str) -> list[tuple[Any, ...]]:
    """Every row of a table as the database stores it, past the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names only
        return list(cursor.fetchall())


@pytest.fixture
def created(api_as: Any, operator: User) -> dict[str, Any]:
    """A fresh enrollment token as its creator saw it: ``token`` (the record) and ``secret``."""
    response = api_as(operator).post("/enrollment-tokens", {"name": "gpu-box-2"})
    assert response.status_code == 201, response.data
    return response.data


# --- enrollment tokens ------------------------------------------------------------------------


def test_enrollment_token_is_shown_once_at_creation(
    api_as: Any, operator: User, created: dict[str, Any]
) -> None:
    assert created["secret"].startswith(f"enr_{created['token']['prefix']}_")
    shown = created["token"]
    assert (shown["name"], shown["state"], shown["created_by"]) == ("gpu-box-2", "usable", "olga")
    assert (shown["used_at"], shown["revoked_at"], shown["node_id"]) == (None, None, None)
    row = EnrollmentToken.objects.get(pk=created["token"]["id"])
    assert row.created_by == operator
    hours = settings.APPLIANCE_ENROLLMENT_TOKEN_HOURS
    assert abs(row.expires_at - timezone.now() - timedelta(hours=hours)) < timedelta(minutes=1)
    event = AuditEvent.objects.get(action="enrollment_token.create")
    assert event.object_id == str(row.pk)
    assert event.details["prefix"] == created["token"]["prefix"]


def test_enrollment_token_plaintext_is_never_shown_again(
    api_as: Any, operator: User, admin: User, created: dict[str, Any]
) -> None:
    for client in (api_as(operator), api_as(admin)):
        response = client.get("/enrollment-tokens")
        assert response.status_code == 200
        assert [t["id"] for t in response.data["items"]] == [created["token"]["id"]]
        assert "secret" not in response.data["items"][0]
        assert created["secret"] not in response.content.decode()


def test_enrollment_token_is_stored_hashed_and_its_plaintext_is_in_no_column(
    created: dict[str, Any],
) -> None:
    plaintext = created["secret"]
    row = EnrollmentToken.objects.get(pk=created["token"]["id"])
    assert row.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    for table in ("fleet_enrollmenttoken", "audit_auditevent"):
        for cells in raw_rows(table):
            assert not any(plaintext in str(cell) for cell in cells), table
    secret_part = plaintext.split("_", 2)[2]
    assert not any(
        secret_part in str(cell) for cells in raw_rows("fleet_enrollmenttoken") for cell in cells
    )


def test_enrollment_token_expiry_can_be_chosen(api_as: Any, admin: User) -> None:
    response = api_as(admin).post("/enrollment-tokens", {"name": "later", "expires_in_hours": 2})
    assert response.status_code == 201, response.data
    row = EnrollmentToken.objects.get(pk=response.data["token"]["id"])
    assert abs(row.expires_at - timezone.now() - timedelta(hours=2)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "box", "expires_in_hours": 0}, "expires_in_hours"),
        ({"name": "box", "expires_in_hours": 24 * 7 + 1}, "expires_in_hours"),
        ({"name": "box", "token": "enr_chosen_by_me"}, "token"),
    ],
)
def test_bad_enrollment_token_requests_are_refused(
    body: dict[str, Any], field: str, api_as: Any, operator: User
) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.post("/enrollment-tokens", body)
    assert_refused(response, 422, "validation_error", before)
    assert field in response.data["fields"], response.data


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_see_or_create_enrollment_tokens(
    role: str, request: pytest.FixtureRequest, api_as: Any, created: dict[str, Any]
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    assert_refused(client.get("/enrollment-tokens"), 403, "permission_denied", before)
    assert_refused(
        client.post("/enrollment-tokens", {"name": "mine"}), 403, "permission_denied", before
    )


def test_revoked_enrollment_token_can_no_longer_enroll_a_machine(
    api_as: Any, admin: User, created: dict[str, Any]
) -> None:
    response = api_as(admin).post(f"/enrollment-tokens/{created['token']['id']}/revoke")

    assert response.status_code == 200, response.data
    assert response.data["state"] == "revoked"
    assert EnrollmentToken.objects.get(pk=created["token"]["id"]).revoked_at is not None
    event = AuditEvent.objects.get(action="enrollment_token.revoke")
    assert event.details == {"prefix": created["token"]["prefix"]}
    with pytest.raises(NotAuthenticated) as refused:
        fleet.node_enroll(token=created["secret"], name="gpu-box-2")
    assert refused.value.code == "enrollment_refused"
    assert not Node.objects.exists()
    failure = AuditEvent.objects.get(action="node.enroll")
    assert (failure.outcome, failure.details["reason"]) == ("failure", "revoked")


def test_revoking_a_token_twice_changes_nothing_the_second_time(
    api_as: Any, operator: User, created: dict[str, Any]
) -> None:
    client = api_as(operator)
    first = client.post(f"/enrollment-tokens/{created['token']['id']}/revoke")
    assert first.status_code == 200
    before = fleet_state()

    again = client.post(f"/enrollment-tokens/{created['token']['id']}/revoke")

    assert again.status_code == 200
    assert again.data["revoked_at"] == first.data["revoked_at"]
    assert fleet_state() == before


def test_used_token_cannot_be_revoked(api_as: Any, operator: User, created: dict[str, Any]) -> None:
    node, _ = fleet.node_enroll(token=created["secret"], name="gpu-box-2")
    client = api_as(operator)
    listed = client.get("/enrollment-tokens").data["items"]
    assert [(t["state"], t["node_id"]) for t in listed] == [("used", node.pk)]
    before = fleet_state()

    response = client.post(f"/enrollment-tokens/{created['token']['id']}/revoke")

    assert_refused(response, 409, "used", before)


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_revoke_enrollment_tokens(
    role: str, request: pytest.FixtureRequest, api_as: Any, created: dict[str, Any]
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    response = client.post(f"/enrollment-tokens/{created['token']['id']}/revoke")
    assert_refused(response, 403, "permission_denied", before)


def test_revoking_an_unknown_enrollment_token_is_not_found(api_as: Any, operator: User) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.post("/enrollment-tokens/999999/revoke")
    assert_refused(response, 404, "not_found", before)


# --- nodes ------------------------------------------------------------------------------------


def test_nodes_are_listed_by_name_with_their_gpus(
    api_as: Any, auditor: User, enroll: Enroll
) -> None:
    enroll("zeta", gpus=[gpu_reading(0), gpu_reading(1, total_gib=40, free_gib=10)])
    enroll("alpha")

    response = api_as(auditor).get("/nodes")

    assert response.status_code == 200, response.data
    assert response.data["count"] == 2
    alpha, zeta = response.data["items"]
    assert (alpha["name"], alpha["status"], alpha["gpus"]) == ("alpha", "online", [])
    assert (zeta["name"], zeta["hostname"]) == ("zeta", "zeta.local")
    assert [
        (g["index"], g["uuid"], g["memory_total_bytes"], g["memory_free_bytes"], g["present"])
        for g in zeta["gpus"]
    ] == [
        (0, "GPU-0000-test", 80 * GIB, 80 * GIB, True),
        (1, "GPU-0001-test", 40 * GIB, 10 * GIB, True),
    ]
    assert zeta["gpus"][0]["last_sample"]["temperature_c"] == 40
    assert "credential_hash" not in zeta
    assert "credential_prefix" not in zeta


def test_node_list_can_be_filtered_by_status(api_as: Any, operator: User, enroll: Enroll) -> None:
    enroll("kept")
    gone = enroll("gone")[0]
    fleet.node_revoke(actor=actor(operator), node=gone)
    client = api_as(operator)

    assert [n["name"] for n in client.get("/nodes?status=revoked").data["items"]] == ["gone"]
    assert [n["name"] for n in client.get("/nodes?status=online").data["items"]] == ["kept"]


def test_gpu_that_disappears_from_the_report_is_shown_as_not_present(
    api_as: Any, operator: User, enroll: Enroll
) -> None:
    node = enroll("flaky", gpus=[gpu_reading(0), gpu_reading(1)])[0]
    node_heartbeat(node=node, report={"gpus": [gpu_reading(0)]})

    gpus = api_as(operator).get(f"/nodes/{node.pk}").data["gpus"]

    assert [(g["index"], g["present"]) for g in gpus] == [(0, True), (1, False)]


def test_node_is_shown_with_its_gpus(api_as: Any, operator: User, enroll: Enroll) -> None:
    node = enroll("gpu-1", gpus=[gpu_reading(0)])[0]
    response = api_as(operator).get(f"/nodes/{node.pk}")
    assert response.status_code == 200, response.data
    assert (response.data["id"], response.data["name"]) == (node.pk, "gpu-1")
    assert [g["id"] for g in response.data["gpus"]] == [node.gpus.get().pk]


def test_app_owner_may_not_see_nodes(api_as: Any, app_owner: User, enroll: Enroll) -> None:
    node = enroll("gpu-1")[0]
    client = api_as(app_owner)
    for path in ("/nodes", f"/nodes/{node.pk}"):
        response = client.get(path)
        assert response.status_code == 403
        assert response.data["code"] == "permission_denied"


def test_unknown_node_is_not_found(api_as: Any, auditor: User) -> None:
    response = api_as(auditor).get("/nodes/999999")
    assert response.status_code == 404
    assert response.data["code"] == "not_found"


# --- GPU history ------------------------------------------------------------------------------


def beat(node: Node, at: datetime, utilization: float, temperature: float = 40) -> None:
    reading = {**gpu_reading(0), "utilization_gpu_pct": utilization, "temperature_c": temperature}
    node_heartbeat(node=node, report={"gpus": [reading]}, now=at)


@pytest.fixture
def sampled(enroll: Enroll) -> tuple[Node, Gpu]:
    """A node whose GPU reported three times: twice in the first minute, once in the next."""
    node = enroll("gpu-1")[0]
    beat(node, T0, utilization=10, temperature=40)
    beat(node, T0 + timedelta(seconds=30), utilization=30, temperature=50)
    beat(node, T0 + timedelta(seconds=70), utilization=90, temperature=60)
    return node, node.gpus.get()


def test_raw_gpu_samples_are_listed_newest_first(
    api_as: Any, auditor: User, sampled: tuple[Node, Gpu]
) -> None:
    node, gpu = sampled
    response = api_as(auditor).get(f"/nodes/{node.pk}/gpus/{gpu.pk}/samples")

    assert response.status_code == 200, response.data
    assert response.data["count"] == 3
    assert [(s["resolution"], s["utilization_gpu_pct"]) for s in response.data["items"]] == [
        ("raw", 90),
        ("raw", 30),
        ("raw", 10),
    ]
    newest = response.data["items"][0]
    assert datetime.fromisoformat(newest["time"]) == T0 + timedelta(seconds=70)
    assert (newest["count"], newest["memory_used_bytes"], newest["throttled"]) == (1, 0, False)


def test_gpu_samples_since_a_time_leave_out_older_ones(
    api_as: Any, operator: User, sampled: tuple[Node, Gpu]
) -> None:
    node, gpu = sampled
    since = (T0 + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    response = api_as(operator).get(f"/nodes/{node.pk}/gpus/{gpu.pk}/samples?since={since}")
    assert response.status_code == 200, response.data
    assert [s["utilization_gpu_pct"] for s in response.data["items"]] == [90, 30]


def test_minute_averages_are_listed_after_the_rollup(
    api_as: Any, operator: User, sampled: tuple[Node, Gpu]
) -> None:
    node, gpu = sampled
    client = api_as(operator)
    path = f"/nodes/{node.pk}/gpus/{gpu.pk}/samples?resolution=minute"
    assert client.get(path).data["count"] == 0

    result = gpu_samples_rollup(now=T0 + timedelta(minutes=3))

    assert result["minute_buckets"] == 2
    response = client.get(path)
    assert response.status_code == 200, response.data
    assert [
        (
            datetime.fromisoformat(s["time"]),
            s["count"],
            s["utilization_gpu_pct"],
            s["temperature_c"],
        )
        for s in response.data["items"]
    ] == [
        (T0 + timedelta(minutes=1), 1, 90, 60),
        (T0, 2, 20, 45),
    ]
    # The raw samples stay (inside their retention) beside the averages.
    assert GpuSample.objects.filter(gpu=gpu, resolution="raw").count() == 3


def test_rolling_up_twice_gives_the_same_minute_averages(sampled: tuple[Node, Gpu]) -> None:
    gpu_samples_rollup(now=T0 + timedelta(minutes=3))
    first = list(GpuSample.objects.filter(resolution="minute").values())
    gpu_samples_rollup(now=T0 + timedelta(minutes=3))
    assert list(GpuSample.objects.filter(resolution="minute").values()) == first


def test_bad_resolution_is_refused(api_as: Any, operator: User, sampled: tuple[Node, Gpu]) -> None:
    node, gpu = sampled
    response = api_as(operator).get(f"/nodes/{node.pk}/gpus/{gpu.pk}/samples?resolution=second")
    assert response.status_code == 422
    assert "resolution" in response.data["fields"]


def test_gpu_of_another_node_is_not_found(
    api_as: Any, operator: User, sampled: tuple[Node, Gpu], enroll: Enroll
) -> None:
    _, gpu = sampled
    other = enroll("other", gpus=[gpu_reading(0)])[0]
    client = api_as(operator)
    for path in (
        f"/nodes/{other.pk}/gpus/{gpu.pk}/samples",
        f"/nodes/{other.pk}/gpus/999999/samples",
        f"/nodes/999999/gpus/{gpu.pk}/samples",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.data["code"] == "not_found"


def test_app_owner_may_not_see_gpu_history(
    api_as: Any, app_owner: User, sampled: tuple[Node, Gpu]
) -> None:
    node, gpu = sampled
    response = api_as(app_owner).get(f"/nodes/{node.pk}/gpus/{gpu.pk}/samples")
    assert response.status_code == 403
    assert response.data["code"] == "permission_denied"


# --- node revocation --------------------------------------------------------------------------


@pytest.fixture
def serving(enroll: Enroll, operator: User, approved_model: BaseModel) -> tuple[Node, str]:
    """A node with a running engine, and its credential."""
    node, credential = enroll("gpu-1", gpus=[gpu_reading(0)])
    deployment = deployment_create(actor=actor(operator), name="chat", model=approved_model)
    engine = deployment.instances.get()
    node_heartbeat(
        node=node,
        report={
            "gpus": [gpu_reading(0, free_gib=8)],
            "engines": [{"instance": str(engine.pk), "state": "ready", "port": 8101}],
        },
    )
    return node, credential


def test_revoked_node_loses_its_credential_and_its_engines_are_stopped(
    api_as: Any, operator: User, serving: tuple[Node, str]
) -> None:
    node, credential = serving
    assert fleet.node_authenticate(credential=credential) == node

    response = api_as(operator).post(f"/nodes/{node.pk}/revoke")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "revoked"
    node.refresh_from_db()
    assert (node.status, node.revoked_at is not None) == ("revoked", True)
    assert fleet.node_authenticate(credential=credential) is None
    assert list(node.instances.values_list("desired_state", "state")) == [("stopped", "ready")]
    event = AuditEvent.objects.get(action="node.revoke")
    assert event.actor_label.startswith("olga via token")
    assert (event.object_id, event.details) == (
        str(node.pk),
        {"name": "gpu-1", "engines_stopped": 1},
    )


def test_revoking_a_node_twice_changes_nothing_the_second_time(
    api_as: Any, operator: User, serving: tuple[Node, str]
) -> None:
    node, _ = serving
    client = api_as(operator)
    first = client.post(f"/nodes/{node.pk}/revoke")
    assert first.status_code == 200
    before = fleet_state()

    again = client.post(f"/nodes/{node.pk}/revoke")

    assert again.status_code == 200
    assert again.data["revoked_at"] == first.data["revoked_at"]
    assert fleet_state() == before


@pytest.mark.parametrize("role", ["auditor", "app_owner"])
def test_only_fleet_managers_may_revoke_nodes(
    role: str, request: pytest.FixtureRequest, api_as: Any, serving: tuple[Node, str]
) -> None:
    node, credential = serving
    client = api_as(request.getfixturevalue(role))
    before = fleet_state()
    response = client.post(f"/nodes/{node.pk}/revoke")
    assert_refused(response, 403, "permission_denied", before)
    assert fleet.node_authenticate(credential=credential) == node


def test_revoking_an_unknown_node_is_not_found(api_as: Any, operator: User) -> None:
    client = api_as(operator)
    before = fleet_state()
    response = client.post("/nodes/999999/revoke")
    assert_refused(response, 404, "not_found", before)
