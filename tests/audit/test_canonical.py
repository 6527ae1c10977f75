"""The fast canonical path gives exactly the RFC 8785 bytes, and falls back where it would not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785

from appliance.audit.canonical import canonical_bytes, event_bytes, event_document, leaf_hash
from appliance.audit.models import AuditEvent
from appliance.audit.services import audit_record, event_document_of
from appliance.audit.tree import stored_events
from appliance.core.actors import system_actor

DOCUMENTS: list[dict[str, Any]] = [
    {"b": 1, "a": [True, False, None], "c": {"z": "", "y": -(2**53 - 1)}},
    {
        "text": 'quote " backslash \\ slash / tab \t nl \n cr \r bs \b ff \f nul \x00 us \x1f del \x7f'
    },
    {"unicode": "é ü 中文 \u2028 \u2029 \ue000 \uffff 😀 \U0010ffff"},
    {"nested": [{"k": [1, 2, {"deep": "v"}]}, [], {}]},
    {"A": 1, "a": 2, "_": 3, "0": 4, "~": 5},
]
FALLBACK: list[dict[str, Any]] = [
    {"float": 1.5, "small": 1e-7, "big": 1e21, "int_like": 2.0},
    {"\ue000": 1, "😀": 2},  # non-ASCII keys: JCS sorts by UTF-16 code units
    {"huge": 2**53 - 1, "neg": -(2**53) + 1},
]


@pytest.mark.parametrize("document", DOCUMENTS + FALLBACK)
def test_canonical_bytes_equal_rfc8785(document: dict[str, Any]) -> None:
    assert canonical_bytes(document) == rfc8785.dumps(document)


def test_unsafe_integers_are_refused_as_rfc8785_refuses_them() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_bytes({"n": 2**53})


@pytest.mark.django_db
def test_values_canonical_json_cannot_encode_are_scrubbed_and_the_event_still_verifies() -> None:
    event = audit_record(
        actor=system_actor(),
        action="test.event",
        object_id="model-\ud800",
        details={"name": "bad \udfff text", "n": 2**60, "x": float("nan")},
    )
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.object_id == "model-\ufffd"
    assert stored.details == {"name": "bad \ufffd text", "n": str(2**60), "x": "nan"}
    assert leaf_hash(canonical_bytes(event_document_of(stored))) == stored.leaf_hash


@pytest.mark.django_db
def test_nul_and_huge_floats_are_scrubbed_so_every_database_stores_and_rehashes_them() -> None:
    event = audit_record(
        actor=system_actor(),
        action="test.event",
        object_id="a\x00b",
        details={"label": "x\x00y", "big": 1e21, "fine": 12.5},
    )
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.object_id == "a\ufffdb"
    assert stored.details == {"label": "x\ufffdy", "big": "1e+21", "fine": 12.5}
    (again,) = stored_events(event.seq - 1, event.seq)
    assert again.data is not None
    assert leaf_hash(again.data) == stored.leaf_hash


EVENT_STRINGS = [
    "",
    "plain",
    'quote " backslash \\ nul \x00 us \x1f del \x7f tab \t',
    "é 中文 \u2028 \ue000 😀 \U0010ffff",
]


@pytest.mark.parametrize("text", EVENT_STRINGS)
@pytest.mark.parametrize(
    "details",
    [{}, {"b": [1, {"z": None}], "a": True}, {"f": 1.5}, {"\ue000": 1}, {"n": 2**53 - 1}],
)
def test_event_bytes_equal_rfc8785_of_the_event_document(
    text: str, details: dict[str, Any]
) -> None:
    document = event_document(
        schema_version=1,
        seq=2**40,
        time=datetime(2026, 12, 1, 12, 0, 0, 5, tzinfo=UTC),
        actor_kind="user",
        actor_id=text,
        actor_label=text,
        action="x." + text,
        object_type=text,
        object_id=text,
        outcome="success",
        request_id=text,
        source_ip=text,
        details=details | {"text": text},
    )
    assert event_bytes(document) == rfc8785.dumps(document)
