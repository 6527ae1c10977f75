"""Signing checkpoints: the log's size and root, extended incrementally from the last one.

Each run reads only the events since the previous checkpoint, recomputes their leaves from the
rows (an edited row stops the run), appends them to the stored compact range, stores the tiles that
filled up, proves consistency with the previous checkpoint and only then signs. It never signs a
tree that does not extend the previous one.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from appliance.audit.keys import (
    note_body,
    note_text,
    signature_valid,
    signer_of,
    signing_key_active,
)
from appliance.audit.merkle import (
    Frontier,
    consistency_proof,
    leaf_hash,
    perfect_from_leaves,
    verify_consistency,
)
from appliance.audit.models import AuditCheckpoint, AuditSequence, AuditTile
from appliance.audit.tree import TILE, StoredTree, stored_events
from appliance.core.errors import Conflict

logger = logging.getLogger(__name__)


class CheckpointRefused(Conflict):
    """The log as stored does not extend the last signed checkpoint; nothing was signed."""

    code = "checkpoint_refused"


def checkpoint_latest() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.select_related("key").order_by("-id").first()


def checkpoint_note(checkpoint: AuditCheckpoint) -> str:
    """The checkpoint as a C2SP signed note."""
    root = bytes.fromhex(checkpoint.root)
    body = note_body(checkpoint.origin, checkpoint.tree_size, root)
    return note_text(
        checkpoint.origin,
        body,
        bytes.fromhex(checkpoint.key.public_key),
        base64.b64decode(checkpoint.signature),
    )


def checkpoint_signature_valid(checkpoint: AuditCheckpoint) -> bool:
    body = note_body(checkpoint.origin, checkpoint.tree_size, bytes.fromhex(checkpoint.root))
    return signature_valid(
        bytes.fromhex(checkpoint.key.public_key), body, base64.b64decode(checkpoint.signature)
    )


def _frontier_of(checkpoint: AuditCheckpoint | None) -> Frontier:
    """The previous checkpoint's compact range, refused unless it yields the signed root."""
    if checkpoint is None:
        return Frontier()
    frontier = Frontier(checkpoint.tree_size, [bytes.fromhex(h) for h in checkpoint.frontier])
    if frontier.root().hex() != checkpoint.root or not checkpoint_signature_valid(checkpoint):
        raise CheckpointRefused(
            f"checkpoint {checkpoint.pk} (size {checkpoint.tree_size}) does not match its "
            "signature or stored range; run `manage.py audit verify`."
        )
    return frontier


def _recomputed(after: int, upto: int) -> Iterator[tuple[int, bytes]]:
    """(seq, leaf) of events ``after < seq <= upto``, each leaf recomputed from its row and
    refused unless it matches the leaf stored when the event was written."""
    expected = after + 1
    for event in stored_events(after, upto):
        if event.seq != expected:
            raise CheckpointRefused(f"event {expected} is missing from the log.")
        leaf = leaf_hash(event.data) if event.data is not None else b""
        if leaf.hex() != event.stored_leaf:
            raise CheckpointRefused(f"event {event.seq} does not match its stored leaf hash.")
        yield event.seq, leaf
        expected += 1
    if expected != upto + 1:
        raise CheckpointRefused(f"event {expected} is missing from the log.")


def _extend(frontier: Frontier, size: int) -> list[AuditTile]:
    """Append events ``frontier.size < seq <= size`` to the frontier, recomputing each leaf from
    its row; returns the tiles completed on the way (their earlier part recomputed too)."""
    start = frontier.size
    tile_start = start - start % TILE
    pending = [leaf for _, leaf in _recomputed(tile_start, start)]
    tiles: list[AuditTile] = []
    for seq, leaf in _recomputed(start, size):
        frontier.append(leaf)
        pending.append(leaf)
        if len(pending) == TILE:
            tiles.append(
                AuditTile(index=(seq - 1) // TILE, hash=perfect_from_leaves(pending).hex())
            )
            pending = []
    return tiles


def _store_tiles(tiles: list[AuditTile]) -> None:
    """Write the new tiles; one left by an earlier run must agree, or nothing is signed."""
    AuditTile.objects.bulk_create(tiles, ignore_conflicts=True)
    stored = dict(
        AuditTile.objects.filter(index__in=[t.index for t in tiles]).values_list("index", "hash")
    )
    for tile in tiles:
        if stored.get(tile.index) != tile.hash:
            raise CheckpointRefused(
                f"stored tile {tile.index} differs from the events it covers; run `audit verify`."
            )


def _due(previous: AuditCheckpoint | None, size: int, now: datetime) -> bool:
    if previous is None or size != previous.tree_size:
        return True
    idle = timedelta(minutes=settings.APPLIANCE_AUDIT_IDLE_CHECKPOINT_MINUTES)
    return now - previous.created_at >= idle


def checkpoint_create(*, force: bool = False) -> AuditCheckpoint | None:
    """Sign a checkpoint if there are new events (or the last one is an hour old, or ``force``).
    Returns None when nothing was due or another process signed the same step first."""
    key = signing_key_active()
    previous = checkpoint_latest()
    size = AuditSequence.objects.values_list("value", flat=True).get(pk=1)
    now = timezone.now()
    if not force and not _due(previous, size, now):
        return None
    frontier = _frontier_of(previous)
    old_size, old_root = frontier.size, frontier.root()
    tiles = _extend(frontier, size)
    _store_tiles(tiles)  # before the proof below, which reads them
    root = frontier.root()
    proof = consistency_proof(old_size, size, StoredTree())
    if not verify_consistency(old_size, size, old_root, root, proof):
        raise CheckpointRefused(
            f"the log at size {size} is not consistent with size {old_size}: a stored tile or "
            "event was changed; run `audit verify`."
        )
    origin = settings.APPLIANCE_AUDIT_ORIGIN
    signature = signer_of(key).sign(note_body(origin, size, root))
    try:
        with transaction.atomic():
            return AuditCheckpoint.objects.create(
                origin=origin,
                tree_size=size,
                root=root.hex(),
                signature=base64.b64encode(signature).decode("ascii"),
                key=key,
                previous=previous,
                consistency=[h.hex() for h in proof],
                frontier=[h.hex() for h in frontier.hashes],
                created_at=now,
            )
    except IntegrityError:  # another worker extended `previous` first; its checkpoint stands
        logger.info("checkpoint at size %s was signed by another worker", size)
        return None
