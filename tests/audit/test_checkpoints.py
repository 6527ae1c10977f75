"""Signed checkpoints: incremental, consistent with the one before, refused over a changed log."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from appliance.audit.checkpoints import (
    CheckpointRefused,
    checkpoint_create,
    checkpoint_latest,
    checkpoint_note,
)
from appliance.audit.keys import note_body, signature_valid
from appliance.audit.merkle import leaf_hash, list_perfect, range_hash, verify_consistency
from appliance.audit.models import AuditCheckpoint, AuditEvent, AuditSigningKey, AuditTile
from appliance.audit.services import audit_record
from appliance.audit.tree import TILE
from appliance.core.actors import system_actor
from tests.audit.tampering import as_root

pytestmark = pytest.mark.django_db


def write(n: int, action: str = "test.event") -> None:
    for i in range(n):
        audit_record(actor=system_actor(), action=action, object_id=i, details={"i": i})


def all_leaves() -> list[bytes]:
    return [
        bytes.fromhex(h)
        for h in AuditEvent.objects.order_by("seq").values_list("leaf_hash", flat=True)
    ]


def test_checkpoint_signs_the_rfc6962_root_of_every_event_so_far() -> None:
    write(5)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    # The signing key's creation is itself the first event.
    size = AuditEvent.objects.count()
    assert checkpoint.tree_size == size == 6
    assert checkpoint.root == range_hash(0, size, list_perfect(all_leaves())).hex()
    body = note_body(checkpoint.origin, size, bytes.fromhex(checkpoint.root))
    public = bytes.fromhex(checkpoint.key.public_key)
    assert signature_valid(public, body, base64.b64decode(checkpoint.signature))


def test_checkpoint_note_is_a_c2sp_signed_note() -> None:
    write(2)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    note = checkpoint_note(checkpoint)
    origin, size, root, blank, signature, end = note.split("\n")
    assert (origin, size, blank, end) == (checkpoint.origin, str(checkpoint.tree_size), "", "")
    assert base64.b64decode(root).hex() == checkpoint.root
    assert signature.startswith(f"\u2014 {checkpoint.origin} ")
    assert len(base64.b64decode(signature.split(" ")[2])) == 4 + 64


def test_nothing_new_means_no_checkpoint_until_an_idle_hour_has_passed(settings: Any) -> None:
    write(1)
    first = checkpoint_create()
    assert first is not None
    assert checkpoint_create() is None
    later = timezone.now() + timedelta(minutes=settings.APPLIANCE_AUDIT_IDLE_CHECKPOINT_MINUTES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: later)
        idle = checkpoint_create()
    assert idle is not None
    assert (idle.tree_size, idle.root, idle.previous_id) == (first.tree_size, first.root, first.pk)


def test_each_checkpoint_proves_consistency_with_the_previous_one() -> None:
    write(3)
    first = checkpoint_create()
    write(10)
    second = checkpoint_create()
    assert first is not None and second is not None
    assert second.previous_id == first.pk
    proof = [bytes.fromhex(h) for h in second.consistency]
    assert verify_consistency(
        first.tree_size,
        second.tree_size,
        bytes.fromhex(first.root),
        bytes.fromhex(second.root),
        proof,
    )


def test_checkpoints_store_full_tiles_and_extend_from_the_stored_range() -> None:
    write(TILE + 10)
    first = checkpoint_create()
    assert first is not None
    assert list(AuditTile.objects.values_list("index", flat=True)) == [0]
    leaves = all_leaves()
    assert AuditTile.objects.get(index=0).hash == range_hash(0, TILE, list_perfect(leaves)).hex()
    write(TILE)  # completes tile 1, which began before the first checkpoint
    second = checkpoint_create()
    assert second is not None
    assert sorted(AuditTile.objects.values_list("index", flat=True)) == [0, 1]
    leaves = all_leaves()
    assert second.root == range_hash(0, len(leaves), list_perfect(leaves)).hex()


def test_changed_event_stops_the_checkpoint_and_names_it() -> None:
    write(3)
    checkpoint_create()
    write(3)
    last = AuditEvent.objects.order_by("-seq").first()
    assert last is not None
    as_root("UPDATE audit_auditevent SET action = 'forged' WHERE seq = %s", [last.seq])
    with pytest.raises(CheckpointRefused, match=f"event {last.seq} does not match"):
        checkpoint_create()


def test_a_rewritten_stored_range_is_refused_before_signing() -> None:
    write(3)
    first = checkpoint_create()
    assert first is not None
    forged = [leaf_hash(b"forged").hex()] * len(first.frontier)
    as_root(
        "UPDATE audit_auditcheckpoint SET frontier = %s WHERE id = %s",
        [json.dumps(forged), first.pk],
    )
    write(1)
    with pytest.raises(CheckpointRefused, match="does not match its signature"):
        checkpoint_create()


def test_checkpoints_cannot_be_changed_or_deleted() -> None:
    write(1)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    for sql in (
        "UPDATE audit_auditcheckpoint SET root = 'x'",
        "DELETE FROM audit_auditcheckpoint",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert checkpoint_latest() == checkpoint


def test_two_workers_cannot_both_extend_the_same_checkpoint() -> None:
    write(1)
    first = checkpoint_create()
    assert first is not None
    key = AuditSigningKey.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditCheckpoint.objects.create(
            origin=first.origin,
            tree_size=first.tree_size,
            root=first.root,
            signature=first.signature,
            key=key,
            previous=None,
            created_at=timezone.now(),
        )
    write(1)
    second = checkpoint_create()
    assert second is not None
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditCheckpoint.objects.create(
            origin=first.origin,
            tree_size=second.tree_size,
            root=second.root,
            signature=second.signature,
            key=key,
            previous=first,
            created_at=timezone.now(),
        )


def test_a_forged_tile_stops_the_next_checkpoint() -> None:
    write(TILE + 5)
    checkpoint_create()
    as_root('UPDATE audit_audittile SET hash = %s WHERE "index" = 0', ["00" * 32])
    write(TILE)
    with pytest.raises(CheckpointRefused, match=r"not consistent .* a stored tile or event"):
        checkpoint_create()


def test_a_tile_left_by_an_earlier_run_must_agree() -> None:
    write(10)
    checkpoint_create()
    AuditTile.objects.create(index=0, hash="00" * 32)  # as if written by a run that then failed
    write(TILE)
    with pytest.raises(CheckpointRefused, match="stored tile 0 differs"):
        checkpoint_create()


def test_the_signed_part_of_a_tile_is_recomputed_from_its_rows() -> None:
    write(10)
    checkpoint_create()
    as_root("UPDATE audit_auditevent SET leaf_hash = %s WHERE seq = 3", ["00" * 32])
    write(TILE)
    with pytest.raises(CheckpointRefused, match="event 3 does not match"):
        checkpoint_create()
