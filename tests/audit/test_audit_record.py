"""The audit write path: contiguous sequence, leaf hashes, fail-closed, append-only triggers."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from appliance.accounts.models import User
from appliance.audit.canonical import canonical_bytes, leaf_hash
from appliance.audit.models import AuditEvent
from appliance.audit.services import audit_record, event_document_of
from appliance.core.actors import system_actor
from tests.conftest import actor

pytestmark = pytest.mark.django_db


def test_sequence_numbers_are_contiguous_from_one() -> None:
    for i in range(5):
        audit_record(actor=system_actor(), action="test.event", details={"i": i})
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3, 4, 5]


def test_rolled_back_change_leaves_no_gap_in_the_sequence() -> None:
    audit_record(actor=system_actor(), action="test.first")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=system_actor(), action="test.rolled_back")
        raise RuntimeError("the change failed")
    audit_record(actor=system_actor(), action="test.second")
    assert list(AuditEvent.objects.values_list("seq", "action")) == [
        (1, "test.first"),
        (2, "test.second"),
    ]


def test_leaf_hash_is_rfc6962_hash_of_the_canonical_stored_event(admin: User) -> None:
    event = audit_record(
        actor=actor(admin),
        action="test.event",
        object_type="user",
        object_id=admin.pk,
        details={"b": 2, "a": [1, "x"]},
    )
    stored = AuditEvent.objects.get(seq=event.seq)
    document = event_document_of(stored)
    assert document["actor"] == {"kind": "user", "id": str(admin.pk), "label": "alice"}
    raw = canonical_bytes(document)
    assert raw.startswith(b'{"action":"test.event","actor":')  # RFC 8785 sorts keys
    assert stored.leaf_hash == hashlib.sha256(b"\x00" + raw).hexdigest() == leaf_hash(raw)


def test_empty_leaf_hash_matches_the_rfc6962_known_answer() -> None:
    assert leaf_hash(b"").startswith("6e340b9c")


def test_event_carries_request_id_and_source_ip_of_the_request(api_as: Any, admin: User) -> None:
    client = api_as(admin)
    response = client.post(
        "/tokens", {"name": "ci"}, headers={"X-Request-ID": "req-12345678"}, REMOTE_ADDR="10.1.2.3"
    )
    assert response.status_code == 201
    event = AuditEvent.objects.filter(action="token.create").last()
    assert (event.request_id, event.source_ip) == ("req-12345678", "10.1.2.3")
    assert response["X-Request-ID"] == "req-12345678"


def test_unwritable_audit_log_fails_closed_and_the_change_is_not_made(
    api_as: Any, admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = api_as(admin)
    users_before = User.objects.count()

    def broken_save(self: AuditEvent, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError("disk full")

    monkeypatch.setattr(AuditEvent, "save", broken_save)
    response = client.post("/users", {"username": "carol", "role": "operator"})
    assert response.status_code == 503
    assert response.data["code"] == "audit_unavailable"
    assert User.objects.count() == users_before
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET action = 'forged' WHERE seq = 1",
        "DELETE FROM audit_auditevent WHERE seq = 1",
    ],
)
def test_database_trigger_refuses_to_change_or_delete_events(statement: str) -> None:
    audit_record(actor=system_actor(), action="test.event")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.get(seq=1).action == "test.event"


def test_orm_update_and_delete_are_refused_too() -> None:
    audit_record(actor=system_actor(), action="test.event")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(seq=1).update(outcome="failure")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(seq=1).delete()
    assert AuditEvent.objects.count() == 1


def test_wiping_the_whole_table_is_refused() -> None:
    audit_record(actor=system_actor(), action="test.event")
    wipe = (
        "TRUNCATE audit_auditevent"
        if connection.vendor == "postgresql"
        else ("DELETE FROM audit_auditevent")
    )
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(wipe)
    assert AuditEvent.objects.count() == 1
