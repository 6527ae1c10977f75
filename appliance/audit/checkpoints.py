"""Signing checkpoints: the log's size and root, extended incrementally from the last one.

Each run reads only the events since the previous checkpoint, recomputes their leaves from the
rows (an edited row stops the run), appends them to the stored compact range, stores the tiles that
filled up, proves consistency with the previous checkpoint and only then signs. It never signs a
tree that does not extend the previous one.
"""

from __future__ import annotations

import base64
import logging
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
from appliance.audit.tree import TILE, StoredTree, stored_events, tile_leaves
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


def _extend(frontier: Frontier, size: int) -> list[AuditTile]:
    """Append events ``frontier.size < seq <= size`` to the frontier, recomputing each leaf from
    its row; returns the tiles completed on the way."""
    start = frontier.size
    pending = tile_leaves(start // TILE, start)  # the part of the current tile already signed
    tiles: list[AuditTile] = []
    for event in stored_events(frontier.size, size):
        if event.seq != frontier.size + 1:
            raise CheckpointRefused(f"event {frontier.size + 1} is missing from the log.")
        leaf = leaf_hash(event.data)
        if leaf.hex() != event.stored_leaf:
            raise CheckpointRefused(f"event {event.seq} does not match its stored leaf hash.")
        frontier.append(leaf)
        pending.append(leaf)
        if len(pending) == TILE:
            index = (frontier.size - 1) // TILE
            tiles.append(AuditTile(index=index, hash=perfect_from_leaves(pending).hex()))
            pending = []
    if frontier.size != size:
        raise CheckpointRefused(f"event {frontier.size + 1} is missing from the log.")
    return tiles


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
    AuditTile.objects.bulk_create(tiles, ignore_conflicts=True)  # a cache: safe to write first
    root = frontier.root()
    proof = consistency_proof(old_size, size, StoredTree())
    if not verify_consistency(old_size, size, old_root, root, proof):
        raise CheckpointRefused(f"the log at size {size} is not consistent with size {old_size}.")
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
