"""The Merkle tree over the stored audit log: reading events in ``seq`` order, and the subtree
hashes that proofs need, from tiles where they are stored and from leaf hashes otherwise.

Leaf ``i`` of the tree is the event with ``seq = i + 1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Max

from appliance.audit.canonical import event_bytes, event_document
from appliance.audit.merkle import perfect_from_leaves
from appliance.audit.models import AuditEvent, AuditTile

TILE = 256  # leaves per stored tile
CHUNK = 5000  # rows read per query when streaming the log

EVENT_COLUMNS = (  # an event's fields as people read them (the export's events.csv)
    "seq",
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
_FIELDS = ("seq", "leaf_hash", "schema_version", *EVENT_COLUMNS[1:])


class TreeGap(Exception):
    """The stored log is missing events a computation needs."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the tree sees it: its document, its canonical bytes (None if the row no longer
    canonicalises, which only a changed row can do) and the leaf hash stored beside it."""

    seq: int
    stored_leaf: str
    document: dict[str, Any]
    data: bytes | None


def _time_of(value: datetime | str) -> datetime:
    """Postgres returns an aware datetime; SQLite the UTC text Django stored."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def _select(after: int, upto: int) -> tuple[str, list[int]]:
    table = AuditEvent._meta.db_table
    columns = ", ".join(f'"{name}"' for name in _FIELDS)
    sql = f'SELECT {columns} FROM "{table}" WHERE "seq" > %s AND "seq" <= %s ORDER BY "seq"'  # noqa: S608 - our names
    return sql, [after, upto]


def stored_events(after: int, upto: int | None = None) -> Iterator[StoredEvent]:
    """Events with ``after < seq <= upto`` in order, with canonical bytes recomputed from the row
    (never trusted from a column), read in chunks with a plain cursor: `audit verify` reads a
    million rows, and model instances (or the ORM's per-field converters) would double its time.

    Each chunk is a closed ``seq`` range, never ``LIMIT`` over an open one: with stale table
    statistics (a freshly loaded log) Postgres may sort the whole rest of the table per chunk."""
    if upto is None:
        upto = AuditEvent.objects.aggregate(last=Max("seq"))["last"] or 0
    last = after
    while last < upto:
        bound = min(last + CHUNK, upto)
        with connection.cursor() as cursor:
            cursor.execute(*_select(last, bound))
            chunk = cursor.fetchall()
        last = bound
        for row in chunk:
            seq, stored, version, time, kind, aid, label, action, otype, oid, out, rid, ip, det = (
                row
            )
            document = event_document(
                schema_version=version,
                seq=seq,
                time=_time_of(time),
                actor_kind=kind,
                actor_id=aid,
                actor_label=label,
                action=action,
                object_type=otype,
                object_id=oid,
                outcome=out,
                request_id=rid,
                source_ip=ip,
                details=json.loads(det) if isinstance(det, str | bytes) else det,
            )
            try:
                data: bytes | None = event_bytes(document)
            except ValueError:  # e.g. a float that came back from jsonb as an unsafe integer
                data = None
            yield StoredEvent(seq=seq, stored_leaf=stored, document=document, data=data)


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
