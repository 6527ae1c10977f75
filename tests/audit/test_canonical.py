"""The fast canonical path gives exactly the RFC 8785 bytes, and falls back where it would not."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785

from appliance.audit.canonical import canonical_bytes, leaf_hash
from appliance.audit.models import AuditEvent
from appliance.audit.services import audit_record, event_document_of
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
