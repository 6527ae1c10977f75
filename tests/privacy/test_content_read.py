"""``content_read``: admins only, audited, and ciphertext that was altered or moved to another row
does not decrypt."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.access.models import Application
from appliance.audit.models import AuditEvent
from appliance.core.errors import NotFound, PermissionDenied
from appliance.core.secrets import pseudonym
from appliance.privacy.errors import ContentIntegrityFailed, MasterKeyUnavailable
from appliance.privacy.models import StoredContent, SubjectKey
from appliance.privacy.services import content_read
from tests.conftest import actor
from tests.privacy.conftest import CANARY, MESSAGES, SUBJECT, store_exchange


def swap(first: StoredContent, second: StoredContent) -> None:
    first.ciphertext, second.ciphertext = bytes(second.ciphertext), bytes(first.ciphertext)
    StoredContent.objects.bulk_update([first, second], ["ciphertext"])


def test_an_admin_reads_the_content_and_the_read_is_audited(app: Application, admin: Any) -> None:
    record = store_exchange(app, request_id="req-00000001", completions=["first", "second"])
    seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()

    read = content_read(actor=actor(admin), request_id="req-00000001")

    assert read.request_id == "req-00000001"
    [exchange] = read.exchanges
    assert exchange.prompt == MESSAGES
    assert exchange.completions == ["first", "second"]
    assert (exchange.application_id, exchange.usage_record_id) == (app.pk, record.pk)
    assert exchange.subject == pseudonym(SUBJECT)
    event = AuditEvent.objects.get(seq__gt=seq)
    assert (event.action, event.object_type, event.object_id) == (
        "content.read",
        "request",
        "req-00000001",
    )
    assert (event.actor_kind, event.actor_id) == (actor(admin).kind, actor(admin).id)
    assert event.details["request_id"] == "req-00000001"
    assert event.details["subjects"] == [pseudonym(SUBJECT)]
    assert CANARY not in json.dumps(event.details)


def test_a_reused_request_id_gives_one_exchange_per_request(app: Application, admin: Any) -> None:
    store_exchange(app, request_id="req-00000001", subject="MRN-1", completions=["a"])
    store_exchange(app, request_id="req-00000001", subject="MRN-2", completions=["b"])
    read = content_read(actor=actor(admin), request_id="req-00000001")
    assert [e.completions for e in read.exchanges] == [["a"], ["b"]]


@pytest.mark.parametrize("role", ["operator", "auditor", "app_owner"])
def test_only_admins_read_content(
    app: Application, role: str, request: pytest.FixtureRequest
) -> None:
    store_exchange(app, request_id="req-00000001")
    before = AuditEvent.objects.count()
    with pytest.raises(PermissionDenied):
        content_read(actor=actor(request.getfixturevalue(role)), request_id="req-00000001")
    assert AuditEvent.objects.count() == before


def test_an_unknown_request_id_is_not_found(app: Application, admin: Any) -> None:
    with pytest.raises(NotFound):
        content_read(actor=actor(admin), request_id="req-00000404")


def test_ciphertext_moved_to_another_request_does_not_decrypt(app: Application, admin: Any) -> None:
    store_exchange(app, request_id="req-00000001")
    store_exchange(app, request_id="req-00000002")  # same subject, so the same data key
    swap(*StoredContent.objects.filter(kind="prompt").order_by("id"))
    with pytest.raises(ContentIntegrityFailed, match="moved"):
        content_read(actor=actor(admin), request_id="req-00000001")


def test_a_prompt_moved_into_the_completion_row_does_not_decrypt(
    app: Application, admin: Any
) -> None:
    store_exchange(app, request_id="req-00000001")
    swap(*StoredContent.objects.order_by("id"))
    with pytest.raises(ContentIntegrityFailed):
        content_read(actor=actor(admin), request_id="req-00000001")


def test_ciphertext_moved_to_another_application_does_not_decrypt(
    application: Any, admin: Any
) -> None:
    first, _ = application("first")
    second, _ = application("second")
    store_exchange(first, request_id="req-00000001")
    store_exchange(second, request_id="req-00000001")
    # Even with the other row's key: the application is part of the associated data.
    row = StoredContent.objects.get(application=first, kind="prompt")
    other = StoredContent.objects.get(application=second, kind="prompt")
    row.subject_key, row.ciphertext = other.subject_key, bytes(other.ciphertext)
    row.save()
    with pytest.raises(ContentIntegrityFailed):
        content_read(actor=actor(admin), request_id="req-00000001")


def test_a_flipped_bit_does_not_decrypt(app: Application, admin: Any) -> None:
    store_exchange(app, request_id="req-00000001")
    row = StoredContent.objects.filter(kind="completion").get()
    tampered = bytearray(bytes(row.ciphertext))
    tampered[20] ^= 1
    row.ciphertext = bytes(tampered)
    row.save()
    with pytest.raises(ContentIntegrityFailed):
        content_read(actor=actor(admin), request_id="req-00000001")


def test_a_wrapped_key_copied_to_another_subject_does_not_unwrap(
    app: Application, admin: Any
) -> None:
    store_exchange(app, request_id="req-00000001", subject="MRN-1")
    store_exchange(app, request_id="req-00000002", subject="MRN-2")
    first, second = SubjectKey.objects.order_by("id")
    second.wrapped_key = first.wrapped_key
    second.save()
    with pytest.raises(MasterKeyUnavailable, match="failed authentication"):
        content_read(actor=actor(admin), request_id="req-00000002")
