"""Canonical bytes and leaf hashes of audit events (RFC 8785 JSON, RFC 6962 leaf hashing).

Kept free of Django models so the standalone export verifier can share the exact rules.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import rfc8785

LEAF_PREFIX = b"\x00"


def format_time(value: datetime) -> str:
    """UTC with microseconds and a ``Z``: one spelling, whatever the database returns."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_document(
    *,
    schema_version: int,
    seq: int,
    time: datetime,
    actor_kind: str,
    actor_id: str,
    actor_label: str,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str,
    request_id: str,
    source_ip: str,
    details: dict[str, Any],
) -> dict[str, Any]:
    """The JSON document an event is, before canonicalisation."""
    return {
        "v": schema_version,
        "seq": seq,
        "time": format_time(time),
        "actor": {"kind": actor_kind, "id": actor_id, "label": actor_label},
        "action": action,
        "object": {"type": object_type, "id": object_id},
        "outcome": outcome,
        "request_id": request_id,
        "source_ip": source_ip,
        "details": details,
    }


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) serialisation: the exact bytes that are hashed and exported."""
    return rfc8785.dumps(document)


def leaf_hash(event_bytes: bytes) -> str:
    """RFC 6962 leaf hash, hex."""
    return hashlib.sha256(LEAF_PREFIX + event_bytes).hexdigest()
