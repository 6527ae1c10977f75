"""Enrolling a machine over the agent API: a one-time enrollment token is exchanged, once, for the
node's own credential; every refusal looks the same and is audited without the token."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.fleet import services
from appliance.fleet.models import EnrollmentToken, Node
from tests.conftest import actor

pytestmark = pytest.mark.django_db

ENROLL = "/api/agent/v1/enroll"


# --- helpers ---------------------------------------------------------------------------------


def post_enroll(body: Any, **headers: str) -> Any:
    response = Client().post(
        ENROLL, data=json.dumps(body), content_type="application/json", headers=headers
    )
    response.data = response.json() if response.content else None
    return response


def enroll_body(token: str, name: str = "gpu-01") -> dict[str, Any]:
    return {
        "token": token,
        "name": name,
        "hostname": f"{name}.hospital.internal",
        "agent_version": "1.0.0",
        "platform": {"os": "Linux", "cpus": 64},
    }


def new_token(user: User, name: str = "gpu-01") -> tuple[EnrollmentToken, str]:
    return services.enrollment_token_create(actor=actor(user), name=name)


def fleet_state() -> dict[str, Any]:
    """Everything a refused enrollment must leave as it was (its own failure event aside)."""
    return {
        "nodes": list(Node.objects.values_list("pk", "name", "credential_prefix").order_by("pk")),
        "tokens": list(
            EnrollmentToken.objects.values_list("pk", "used_at", "node_id", "revoked_at").order_by(
                "pk"
            )
        ),
        "audit": Counter(
            AuditEvent.objects.exclude(action="node.enroll", outcome="failure").values_list(
                "action", flat=True
            )
        ),
    }


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="node.enroll", outcome="failure"))


def event_text(event: AuditEvent) -> str:
    return json.dumps(
        [event.actor_id, event.actor_label, event.object_id, event.details], sort_keys=True
    )


def same_refusal(response: Any) -> dict[str, Any]:
    """The part of a refusal that must not differ between reasons (request ids always do)."""
    assert response.status_code == 401, response.data
    return {k: v for k, v in response.data.items() if k != "request_id"}


# --- success ---------------------------------------------------------------------------------


def test_enrollment_returns_a_node_credential_stored_only_as_prefix_and_hash(
    operator: User,
) -> None:
    token, plaintext = new_token(operator)

    response = post_enroll(enroll_body(plaintext))

    assert response.status_code == 201, response.data
    credential = response.data["credential"]
    assert credential.startswith("nod_")
    node = Node.objects.get()
    assert response.data["node_id"] == node.pk
    assert response.data["name"] == "gpu-01"
    assert response.data["heartbeat_seconds"] > 0
    assert node.hostname == "gpu-01.hospital.internal"
    assert node.agent_version == "1.0.0"
    assert node.platform == {"os": "Linux", "cpus": 64}
    assert node.status == "online"
    assert credential.split("_")[1] == node.credential_prefix
    assert node.credential_hash == hashlib.sha256(credential.encode()).hexdigest()
    secret = credential.split("_", 2)[2]
    for field in Node._meta.concrete_fields:
        stored = json.dumps(getattr(node, field.attname), default=str)
        assert credential not in stored, field.name
        assert secret not in stored, field.name
    token.refresh_from_db()
    assert token.used_at is not None
    assert token.node == node
    assert services.node_authenticate(credential=credential) == node


def test_the_credential_is_shown_once_and_never_by_the_management_api(
    operator: User, api_as: Any
) -> None:
    _, plaintext = new_token(operator)
    credential = post_enroll(enroll_body(plaintext)).data["credential"]
    node = Node.objects.get()

    client = api_as(operator)
    listed = client.get("/nodes")
    detail = client.get(f"/nodes/{node.pk}")

    assert listed.status_code == 200, listed.data
    assert detail.status_code == 200, detail.data
    secret = credential.split("_", 2)[2]
    assert secret not in json.dumps(listed.data)
    assert secret not in json.dumps(detail.data)


def test_enrollment_is_audited_with_the_node_as_actor_and_without_secrets(operator: User) -> None:
    token, plaintext = new_token(operator)

    credential = post_enroll(enroll_body(plaintext)).data["credential"]

    node = Node.objects.get()
    event = AuditEvent.objects.get(action="node.enroll")
    assert event.outcome == "success"
    assert event.actor_kind == "node"
    assert event.actor_id == str(node.pk)
    assert event.object_type == "node"
    assert event.object_id == str(node.pk)
    assert event.details["name"] == "gpu-01"
    assert event.details["enrollment_token"] == token.prefix
    assert event.details["credential"] == node.credential_prefix
    text = event_text(event)
    assert plaintext not in text
    assert credential not in text
    assert plaintext.split("_", 2)[2] not in text
    assert credential.split("_", 2)[2] not in text


# --- refusals --------------------------------------------------------------------------------


def test_an_enrollment_token_works_only_once(operator: User) -> None:
    _, plaintext = new_token(operator)
    assert post_enroll(enroll_body(plaintext, "gpu-01")).status_code == 201
    before = fleet_state()

    response = post_enroll(enroll_body(plaintext, "gpu-02"))

    assert response.status_code == 401, response.data
    assert response.data["code"] == "enrollment_refused"
    assert fleet_state() == before
    assert list(Node.objects.values_list("name", flat=True)) == ["gpu-01"]
    [event] = refusals()
    assert event.details["reason"] == "used"
    assert event.actor_kind == "anonymous"
    assert plaintext not in event_text(event)
    assert plaintext.split("_", 2)[2] not in event_text(event)


def test_an_expired_token_is_refused_and_stays_unused(operator: User) -> None:
    token, plaintext = new_token(operator)
    EnrollmentToken.objects.filter(pk=token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    before = fleet_state()

    response = post_enroll(enroll_body(plaintext))

    assert response.status_code == 401, response.data
    assert response.data["code"] == "enrollment_refused"
    assert fleet_state() == before
    assert not Node.objects.exists()
    token.refresh_from_db()
    assert token.used_at is None
    assert token.node is None
    assert [e.details["reason"] for e in refusals()] == ["expired"]


def test_unknown_expired_revoked_and_used_tokens_are_refused_alike(operator: User) -> None:
    _, used = new_token(operator, "used")
    assert post_enroll(enroll_body(used, "first")).status_code == 201
    expired_token, expired = new_token(operator, "expired")
    EnrollmentToken.objects.filter(pk=expired_token.pk).update(
        expires_at=timezone.now() - timedelta(hours=1)
    )
    revoked_token, revoked = new_token(operator, "revoked")
    services.enrollment_token_revoke(actor=actor(operator), token=revoked_token)
    usable_token, _ = new_token(operator, "usable")
    # Right prefix, wrong secret: as unknown as a token that never existed.
    forged = f"enr_{usable_token.prefix}_{'A' * 43}"
    unknown = f"enr_{'0' * 12}_{'B' * 43}"
    tokens = {
        "unknown": unknown,
        "forged": forged,
        "garbage": "not-a-token",
        "expired": expired,
        "revoked": revoked,
        "used": used,
    }
    before = fleet_state()

    bodies = {
        what: same_refusal(post_enroll(enroll_body(token, f"node-{what}")))
        for what, token in tokens.items()
    }

    assert len({json.dumps(body, sort_keys=True) for body in bodies.values()}) == 1
    assert bodies["unknown"]["code"] == "enrollment_refused"
    assert fleet_state() == before
    usable_token.refresh_from_db()
    assert usable_token.used_at is None  # the forged secret did not spend it
    events = refusals()
    assert [e.details["reason"] for e in events] == [
        "unknown",
        "unknown",
        "unknown",
        "expired",
        "revoked",
        "used",
    ]
    for event in events:
        assert event.actor_kind == "anonymous"
        text = event_text(event)
        for token in tokens.values():
            assert token not in text
            if token.count("_") == 2:
                assert token.split("_", 2)[2] not in text


def test_a_duplicate_node_name_is_a_conflict_and_leaves_the_token_unused(operator: User) -> None:
    _, first = new_token(operator, "first")
    assert post_enroll(enroll_body(first, "gpu-01")).status_code == 201
    token, second = new_token(operator, "second")
    before = fleet_state()

    response = post_enroll(enroll_body(second, "gpu-01"))

    assert response.status_code == 409, response.data
    assert response.data["code"] == "duplicate_name"
    assert fleet_state() == before
    token.refresh_from_db()
    assert token.used_at is None
    assert token.node is None
    # The token still works for a machine with another name.
    assert post_enroll(enroll_body(second, "gpu-02")).status_code == 201
    token.refresh_from_db()
    assert token.node == Node.objects.get(name="gpu-02")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"token": None}, "token"),
        ({"token": ""}, "token"),
        ({"name": ""}, "name"),
        ({"name": "gpu 01; rm -rf /"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"hostname": "h" * 256}, "hostname"),
        ({"platform": "linux"}, "platform"),
        ({"role": "admin"}, "role"),
    ],
)
def test_a_bad_enrollment_body_is_422_and_spends_nothing(
    operator: User, change: dict[str, Any], field: str
) -> None:
    token, plaintext = new_token(operator)
    body = {**enroll_body(plaintext), **change}
    if change.get("token", "") is None:
        del body["token"]
    before = fleet_state()

    response = post_enroll(body)

    assert response.status_code == 422, response.data
    assert response.data["code"] == "validation_error"
    assert field in response.data["fields"], response.data
    assert fleet_state() == before
    assert refusals() == []
    token.refresh_from_db()
    assert token.used_at is None


def test_a_body_that_is_not_json_is_refused_and_spends_nothing(operator: User) -> None:
    token, _ = new_token(operator)
    before = fleet_state()

    response = Client().post(ENROLL, data="token=x&name=y", content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "bad_request"
    assert fleet_state() == before
    token.refresh_from_db()
    assert token.used_at is None


def test_refused_enrollments_from_one_address_are_throttled_without_filling_the_audit_log(
    operator: User, settings: Any
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 1  # four refusals per address, then 429
    _, good = new_token(operator)
    for attempt in range(4):
        refused = post_enroll(enroll_body(f"enr_{'0' * 12}_forged{attempt}"))
        assert refused.status_code == 401
    events_before = AuditEvent.objects.count()

    throttled = post_enroll(enroll_body(good))

    assert throttled.status_code == 429
    assert throttled.data["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0
    assert AuditEvent.objects.count() == events_before  # no event per throttled attempt
    assert not Node.objects.exists()  # even a good token waits out the window
