"""The Merkle tree over the stored audit log: reading events in ``seq`` order, and the subtree
hashes that proofs need, from tiles where they are stored and from leaf hashes otherwise.

Leaf ``i`` of the tree is the event with ``seq = i + 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from appliance.audit.canonical import canonical_bytes, event_document
from appliance.audit.merkle import perfect_from_leaves
from appliance.audit.models import AuditEvent, AuditTile

TILE = 256  # leaves per stored tile
CHUNK = 5000  # rows read per query when streaming the log

_FIELDS = (
    "seq",
    "leaf_hash",
    "schema_version",
    "time",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "object_type",
    "object_id",
    "outcome",
    "request_id",
    "source_ip",
    "details",
)


class TreeGap(Exception):
    """The stored log is missing events a computation needs."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the tree sees it: its canonical bytes and the leaf hash stored beside it."""

    seq: int
    stored_leaf: str
    data: bytes


def stored_events(after: int, upto: int | None = None) -> Iterator[StoredEvent]:
    """Events with ``after < seq <= upto`` in order, with canonical bytes recomputed from the row
    (never trusted from a column), read in chunks without building model instances."""
    last = after
    while upto is None or last < upto:
        rows = AuditEvent.objects.filter(seq__gt=last)
        if upto is not None:
            rows = rows.filter(seq__lte=upto)
        chunk = list(rows.order_by("seq").values_list(*_FIELDS)[:CHUNK])
        if not chunk:
            return
        for row in chunk:
            seq, stored, version, time, kind, aid, label, action, otype, oid, out, rid, ip, det = (
                row
            )
            document = event_document(
                schema_version=version,
                seq=seq,
                time=time,
                actor_kind=kind,
                actor_id=aid,
                actor_label=label,
                action=action,
                object_type=otype,
                object_id=oid,
                outcome=out,
                request_id=rid,
                source_ip=ip,
                details=det,
            )
            yield StoredEvent(seq=seq, stored_leaf=stored, data=canonical_bytes(document))
        last = chunk[-1][0]


def stored_leaves(start: int, end: int) -> list[bytes]:
    """Stored leaf hashes of leaves [start, end); raises TreeGap if any is missing."""
    rows = list(
        AuditEvent.objects.filter(seq__gt=start, seq__lte=end)
        .order_by("seq")
        .values_list("leaf_hash", flat=True)
    )
    if len(rows) != end - start:
        raise TreeGap(f"events {start + 1}..{end} are not all present")
    return [bytes.fromhex(h) for h in rows]


def tile_leaves(index: int, upto: int) -> list[bytes]:
    """The stored leaves of tile ``index`` that lie below tree size ``upto``."""
    start = index * TILE
    return stored_leaves(start, min(start + TILE, upto)) if upto > start else []


class StoredTree:
    """A ``Perfect`` over the database: whole tiles from AuditTile, the rest from leaf hashes."""

    def __call__(self, start: int, size: int) -> bytes:
        if size >= TILE and start % TILE == 0:
            first, count = start // TILE, size // TILE
            tiles = dict(
                AuditTile.objects.filter(index__gte=first, index__lt=first + count).values_list(
                    "index", "hash"
                )
            )
            if len(tiles) == count:
                return perfect_from_leaves(
                    [bytes.fromhex(tiles[i]) for i in range(first, first + count)]
                )
        return perfect_from_leaves(stored_leaves(start, start + size))
