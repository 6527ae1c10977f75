"""What the gateway keeps of a request: nothing under ``no_content``; under ``keep_encrypted`` the
prompt and completion, encrypted, written with the usage record, filed under the subject that
``X-Appliance-Subject`` names; and no answer when they cannot be encrypted."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import pytest
from django.db import DatabaseError, connection

from appliance.access import services as access
from appliance.access.choices import DataPolicy
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.models import AuditEvent
from appliance.audit.verification import audit_verify
from appliance.core.crypto import KEY_BYTES, master_keys
from appliance.core.secrets import pseudonym
from appliance.gateway import records
from appliance.gateway.models import UsageRecord
from appliance.privacy.capture import Capture
from appliance.privacy.errors import ContentErased
from appliance.privacy.keys import subject_pseudonym, subject_valid
from appliance.privacy.models import StoredContent, SubjectKey
from appliance.privacy.services import content_read, subject_erase
from tests.conftest import actor
from tests.privacy.conftest import (
    CANARY,
    MESSAGES,
    SUBJECT,
    chunks_text,
    post,
    stream_lines,
)


def only_exchange(admin: Any, request_id: str) -> Any:
    read = content_read(actor=actor(admin), request_id=request_id)
    assert len(read.exchanges) == 1
    return read.exchanges[0]


def test_nothing_is_kept_under_the_default_policy_even_with_a_subject_header(
    gateway: Any, application: Any, approved_model: Any, engine: Any
) -> None:
    _, key = application(grants=[approved_model])
    # Not even looked at: a malformed header does not matter where nothing is kept.
    response = post(gateway, key, headers={"X-Appliance-Subject": "x" * 500})
    assert response.status_code == 200
    body = {"model": "base-model", "messages": MESSAGES}
    assert chunks_text(stream_lines(gateway, key, body)) == "t0 t1 t2 "
    assert UsageRecord.objects.count() == 2
    assert not StoredContent.objects.exists()
    assert not SubjectKey.objects.exists()


def test_a_kept_chat_answer_is_stored_encrypted_and_read_back_by_an_admin(
    gateway: Any, keeping: Any, engine: Any, admin: Any
) -> None:
    app, key = keeping
    response = post(gateway, key, headers={"X-Appliance-Subject": SUBJECT})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "ok ok ok "
    request_id = response.headers["X-Request-ID"]

    record = UsageRecord.objects.get()
    rows = list(StoredContent.objects.order_by("kind"))
    assert [(r.kind, r.request_id, r.usage_record_id) for r in rows] == [
        ("completion", request_id, record.pk),
        ("prompt", request_id, record.pk),
    ]
    subject_key = SubjectKey.objects.get()
    assert subject_key.subject == pseudonym(SUBJECT)
    assert subject_key.application_id == app.pk
    exchange = only_exchange(admin, request_id)
    assert exchange.prompt == MESSAGES
    assert exchange.completions == ["ok ok ok "]
    assert exchange.usage_record_id == record.pk
    assert not exchange.erased


def test_a_raw_select_shows_no_plaintext(
    gateway: Any, keeping: Any, engine: Any, admin: Any
) -> None:
    _, key = keeping
    assert post(gateway, key, headers={"X-Appliance-Subject": SUBJECT}).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext FROM privacy_storedcontent")
        blobs = [bytes(row[0]) for row in cursor.fetchall()]
        cursor.execute("SELECT subject, wrapped_key FROM privacy_subjectkey")
        keys = cursor.fetchall()
    assert len(blobs) == 2
    for blob in blobs:
        for needle in (CANARY, "Jane Roe", "ok ok ok"):
            assert needle.encode() not in blob
            assert needle.encode("utf-16-le") not in blob
    assert all(SUBJECT not in subject and SUBJECT not in wrapped for subject, wrapped in keys)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_kept_stream_stores_the_concatenated_deltas(
    gateway: Any, keeping: Any, engine: Any, admin: Any, endpoint: str
) -> None:
    _, key = keeping
    body: dict[str, Any] = {"model": "base-model"}
    body.update({"messages": MESSAGES} if endpoint == "chat" else {"prompt": CANARY})
    payloads = stream_lines(gateway, key, body, **{"X-Appliance-Subject": SUBJECT})
    assert chunks_text(payloads) == "t0 t1 t2 "

    request_id = UsageRecord.objects.get().request_id
    exchange = only_exchange(admin, request_id)
    assert exchange.completions == ["t0 t1 t2 "]
    assert exchange.prompt == (MESSAGES if endpoint == "chat" else CANARY)


def test_a_kept_completion_and_an_embedding(
    gateway: Any, keeping: Any, engine: Any, admin: Any
) -> None:
    _, key = keeping
    completion = post(
        gateway, key, {"model": "base-model", "prompt": [CANARY, "second"]}, path="/completions"
    )
    embedding = post(gateway, key, {"model": "base-model", "input": CANARY}, path="/embeddings")
    assert completion.status_code == embedding.status_code == 200

    first = only_exchange(admin, completion.headers["X-Request-ID"])
    assert (first.prompt, first.completions) == ([CANARY, "second"], ["ok ok ok "])
    second = only_exchange(admin, embedding.headers["X-Request-ID"])
    assert (second.prompt, second.completions) == (CANARY, None)  # vectors are not text


def test_several_choices_are_kept_apart(
    gateway: Any, keeping: Any, engine: Any, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.gateway import fake_engine

    answer = fake_engine.FakeEngine._answer

    def two_choices(self: Any, document: Any, path: str) -> Any:
        result = answer(self, document, path)
        result["choices"].append(
            {"index": 1, "message": {"role": "assistant", "content": "second"}}
        )
        return result

    monkeypatch.setattr(fake_engine.FakeEngine, "_answer", two_choices)
    _, key = keeping
    response = post(gateway, key, {"model": "base-model", "messages": MESSAGES, "n": 2})
    assert response.status_code == 200
    exchange = only_exchange(admin, response.headers["X-Request-ID"])
    assert exchange.completions == ["ok ok ok ", "second"]


def test_each_subject_has_its_own_key_and_no_header_files_under_the_application(
    gateway: Any, keeping: Any, engine: Any
) -> None:
    _, key = keeping
    for subject in ("MRN-1", "MRN-2", "MRN-1", None):
        headers = {"X-Appliance-Subject": subject} if subject else {}
        assert post(gateway, key, headers=headers).status_code == 200

    keys = {k.subject: k for k in SubjectKey.objects.all()}
    assert set(keys) == {pseudonym("MRN-1"), pseudonym("MRN-2"), subject_pseudonym(None)}
    assert keys[pseudonym("MRN-1")].content.count() == 4  # two requests, prompt + completion
    assert len({k.wrapped_key for k in keys.values()}) == 3


@pytest.mark.parametrize(
    "subject",
    ["", "x" * 129, "tab\there", "Jos\xc3\xa9".encode("latin-1")],
    ids=["empty", "too-long", "tab", "non-ascii"],
)
def test_a_malformed_subject_header_is_400_and_nothing_is_forwarded_or_kept(
    gateway: Any, keeping: Any, engine: Any, subject: Any
) -> None:
    _, key = keeping
    response = post(gateway, key, headers={"X-Appliance-Subject": subject})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_subject"
    assert error["type"] == "invalid_request_error"
    assert "X-Appliance-Subject" in error["message"]
    assert "printable ASCII" in error["message"]
    assert not engine.requests
    assert not StoredContent.objects.exists()
    assert not SubjectKey.objects.exists()


@pytest.mark.parametrize("subject", ["bell\x07", "del\x7f", "nul\x00", "é", "line\nbreak"])
def test_control_and_non_ascii_characters_are_not_a_subject(subject: str) -> None:
    # (The HTTP server refuses most of these in a header before the gateway sees them.)
    assert not subject_valid(subject)


def test_the_longest_subject_is_accepted(gateway: Any, keeping: Any, engine: Any) -> None:
    _, key = keeping
    subject = "~" * 128
    assert post(gateway, key, headers={"X-Appliance-Subject": subject}).status_code == 200
    assert SubjectKey.objects.get().subject == pseudonym(subject)


def test_a_policy_change_takes_effect_on_the_next_request(
    gateway: Any,
    application: Any,
    approved_model: Any,
    engine: Any,
    admin: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    app, key = application(grants=[approved_model])
    assert post(gateway, key).status_code == 200  # the principal is cached: no_content
    with django_capture_on_commit_callbacks(execute=True):
        access.application_update(
            actor=actor(admin), application=app, data_policy=DataPolicy.KEEP_ENCRYPTED
        )
    assert post(gateway, key).status_code == 200
    assert StoredContent.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        access.application_update(
            actor=actor(admin), application=app, data_policy=DataPolicy.NO_CONTENT
        )
    assert post(gateway, key).status_code == 200
    assert StoredContent.objects.count() == 2


@pytest.mark.parametrize("stream", [False, True])
def test_no_answer_when_the_subject_key_cannot_be_unwrapped(
    gateway: Any, keeping: Any, engine: Any, use_master_keys: Any, stream: bool
) -> None:
    _, key = keeping
    assert post(gateway, key, headers={"X-Appliance-Subject": SUBJECT}).status_code == 200
    use_master_keys(secrets.token_bytes(KEY_BYTES))  # the key that wrapped it is gone
    forwarded = len(engine.requests)

    body = {"model": "base-model", "messages": MESSAGES, "stream": stream}
    response = post(gateway, key, body, headers={"X-Appliance-Subject": SUBJECT})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "content_unavailable"
    assert "ok" not in response.text
    assert len(engine.requests) == forwarded  # never forwarded
    assert StoredContent.objects.count() == 2  # the first request's only
    failed = UsageRecord.objects.order_by("id").last()
    assert failed is not None
    assert (failed.status, failed.error_code) == (503, "content_unavailable")
    event = AuditEvent.objects.filter(action="inference").order_by("seq").last()
    assert event is not None
    assert event.details["error_code"] == "content_unavailable"


def test_no_answer_when_the_completion_cannot_be_encrypted(
    gateway: Any, keeping: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Capture, texts: list[str]) -> None:
        raise OverflowError("simulated")

    monkeypatch.setattr(Capture, "seal_completion", broken)
    _, key = keeping
    response = post(gateway, key)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "content_unavailable"
    assert "ok ok ok" not in response.text
    assert UsageRecord.objects.get().status == 503


def test_a_new_subject_key_is_wrapped_by_the_current_master_key(
    gateway: Any, keeping: Any, engine: Any
) -> None:
    from appliance.core.crypto import current_master_key_id, wrapped_by

    _, key = keeping
    assert post(gateway, key).status_code == 200
    assert wrapped_by(SubjectKey.objects.get().wrapped_key) == current_master_key_id()
    assert master_keys()[1] == ()


def test_the_canary_prompt_and_subject_never_reach_logs_or_audit_details(
    gateway: Any, keeping: Any, engine: Any, admin: Any, caplog: Any
) -> None:
    _, key = keeping
    with caplog.at_level(logging.DEBUG):
        response = post(gateway, key, headers={"X-Appliance-Subject": SUBJECT})
        payloads = stream_lines(
            gateway,
            key,
            {"model": "base-model", "messages": MESSAGES},
            **{"X-Appliance-Subject": SUBJECT},
        )
        only_exchange(admin, response.headers["X-Request-ID"])
        bad = post(gateway, key, headers={"X-Appliance-Subject": SUBJECT * 20})
    assert response.status_code == 200 and payloads and bad.status_code == 400
    assert caplog.records  # the loggers were captured ...
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (CANARY, "Jane Roe", SUBJECT):  # ... and hold neither content nor subject
        assert secret not in logged
    details = json.dumps([e.details for e in AuditEvent.objects.all()])
    assert "content.read" in set(AuditEvent.objects.values_list("action", flat=True))
    assert CANARY not in details and "Jane Roe" not in details and SUBJECT not in details
    assert pseudonym(SUBJECT) in details  # the read names the subject by pseudonym only


def test_content_and_usage_record_are_written_together_or_not_at_all(
    gateway: Any, keeping: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(entries: Any) -> None:
        raise DatabaseError("simulated")

    monkeypatch.setattr(records, "audit_record_many", failing)
    _, key = keeping
    response = post(gateway, key, headers={"X-Appliance-Subject": SUBJECT})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert not UsageRecord.objects.exists()
    assert not StoredContent.objects.exists()


def test_content_kept_by_the_gateway_is_erased_with_its_subject(
    gateway: Any, keeping: Any, engine: Any, admin: Any, app_owner: Any
) -> None:
    app, key = keeping
    first = post(gateway, key, headers={"X-Appliance-Subject": SUBJECT})
    other = post(gateway, key, headers={"X-Appliance-Subject": "MRN-other"})
    checkpoint_create(force=True)

    erasure = subject_erase(actor=actor(app_owner), application=app, subject=SUBJECT)

    assert erasure.content_rows == 2
    with pytest.raises(ContentErased):
        content_read(actor=actor(admin), request_id=first.headers["X-Request-ID"])
    assert only_exchange(admin, other.headers["X-Request-ID"]).prompt == MESSAGES
    assert post(gateway, key, headers={"X-Appliance-Subject": SUBJECT}).status_code == 200
    checkpoint_create(force=True)
    assert audit_verify(actor=actor(admin)).valid
