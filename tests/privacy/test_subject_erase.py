"""``subject_erase`` (GDPR Art. 17): the subject's key is destroyed, its content becomes unreadable,
the event names the subject by pseudonym only, and the audit log still verifies."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from appliance.access.models import Application
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.models import AuditEvent
from appliance.audit.retention import legal_hold_place, legal_hold_release
from appliance.audit.verification import audit_verify
from appliance.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from appliance.core.secrets import pseudonym
from appliance.privacy.errors import ContentErased
from appliance.privacy.keys import subject_pseudonym
from appliance.privacy.models import StoredContent, SubjectKey
from appliance.privacy.services import content_read, subject_erase
from tests.conftest import actor
from tests.privacy.conftest import CANARY, SUBJECT, store_exchange


def test_erasure_makes_the_subjects_content_unreadable_and_the_log_still_verifies(
    app: Application, admin: Any
) -> None:
    store_exchange(app, request_id="req-00000001")
    store_exchange(app, request_id="req-00000002")
    store_exchange(app, request_id="req-00000003", subject="MRN-other")
    checkpoint_create(force=True)

    erasure = subject_erase(actor=actor(admin), application=app, subject=SUBJECT)

    assert erasure.content_rows == 4
    assert erasure.subject == pseudonym(SUBJECT)
    key = SubjectKey.objects.get(subject=pseudonym(SUBJECT))
    assert key.wrapped_key == "" and key.erased_at == erasure.erased_at
    assert StoredContent.objects.count() == 6  # the ciphertext stays, without a key to it
    for request_id in ("req-00000001", "req-00000002"):
        with pytest.raises(ContentErased):
            content_read(actor=actor(admin), request_id=request_id)
    assert content_read(actor=actor(admin), request_id="req-00000003").exchanges[0].prompt

    event = AuditEvent.objects.get(action="privacy.subject_erase")
    assert (event.object_type, event.object_id) == ("application", str(app.pk))
    assert event.details == {
        "application": app.name,
        "subject": pseudonym(SUBJECT),
        "content_rows": 4,
    }
    assert SUBJECT not in json.dumps(event.details) and CANARY not in json.dumps(event.details)
    checkpoint_create(force=True)
    assert audit_verify(actor=actor(admin)).valid


def test_erasing_again_is_a_conflict_and_an_unknown_subject_not_found(
    app: Application, admin: Any
) -> None:
    store_exchange(app, request_id="req-00000001")
    subject_erase(actor=actor(admin), application=app, subject=SUBJECT)
    before = AuditEvent.objects.count()
    with pytest.raises(Conflict) as again:
        subject_erase(actor=actor(admin), application=app, subject=SUBJECT)
    assert again.value.code == "already_erased"
    with pytest.raises(NotFound) as unknown:
        subject_erase(actor=actor(admin), application=app, subject="MRN-never-seen")
    assert unknown.value.code == "subject_not_found"
    assert AuditEvent.objects.count() == before


def test_content_stored_after_an_erasure_gets_a_new_key(app: Application, admin: Any) -> None:
    store_exchange(app, request_id="req-00000001")
    subject_erase(actor=actor(admin), application=app, subject=SUBJECT)
    store_exchange(app, request_id="req-00000002", completions=["after"])

    assert content_read(actor=actor(admin), request_id="req-00000002").exchanges[0].completions
    with pytest.raises(ContentErased):
        content_read(actor=actor(admin), request_id="req-00000001")
    assert SubjectKey.objects.filter(subject=pseudonym(SUBJECT)).count() == 2
    second = subject_erase(actor=actor(admin), application=app, subject=SUBJECT)
    assert second.content_rows == 2


def test_the_applications_own_content_is_erased_without_a_subject(
    app: Application, app_owner: Any, admin: Any
) -> None:
    store_exchange(app, request_id="req-00000001", subject=None)
    erasure = subject_erase(actor=actor(app_owner), application=app, subject=None)
    assert erasure.subject == subject_pseudonym(None)
    with pytest.raises(ContentErased):
        content_read(actor=actor(admin), request_id="req-00000001")


def test_the_owner_erases_their_own_applications_subjects(app: Application, app_owner: Any) -> None:
    store_exchange(app, request_id="req-00000001")
    assert subject_erase(actor=actor(app_owner), application=app, subject=SUBJECT).content_rows


@pytest.mark.parametrize("role", ["operator", "auditor", "oscar"])
def test_others_may_not_erase_and_nothing_changes(
    app: Application, role: str, request: pytest.FixtureRequest
) -> None:
    store_exchange(app, request_id="req-00000001")
    before = AuditEvent.objects.count()
    with pytest.raises(PermissionDenied):
        subject_erase(actor=actor(request.getfixturevalue(role)), application=app, subject=SUBJECT)
    assert SubjectKey.objects.get().erased_at is None
    assert AuditEvent.objects.count() == before


def test_a_malformed_subject_is_refused(app: Application, admin: Any) -> None:
    with pytest.raises(ValidationFailed) as refused:
        subject_erase(actor=actor(admin), application=app, subject="x" * 129)
    assert "subject" in refused.value.fields


def test_a_legal_hold_over_the_subjects_data_stops_erasure_until_released(
    app: Application, admin: Any
) -> None:
    store_exchange(app, request_id="req-held")
    hold = legal_hold_place(actor=actor(admin), name="Case 9", reason="Litigation", application=app)
    with pytest.raises(Conflict, match="Legal hold 'Case 9'") as refused:
        subject_erase(actor=actor(admin), application=app, subject=SUBJECT)
    assert refused.value.code == "legal_hold"
    assert SubjectKey.objects.get(subject=pseudonym(SUBJECT)).erased_at is None
    assert not AuditEvent.objects.filter(action="privacy.subject_erase").exists()
    legal_hold_release(actor=actor(admin), hold=hold)
    assert subject_erase(actor=actor(admin), application=app, subject=SUBJECT).content_rows == 2


def test_a_hold_on_another_window_does_not_stop_erasure(app: Application, admin: Any) -> None:
    store_exchange(app, request_id="req-now")
    long_ago = timezone.now() - timedelta(days=900)
    legal_hold_place(
        actor=actor(admin),
        name="Old case",
        reason="An earlier period",
        application=app,
        starts_at=long_ago - timedelta(days=30),
        ends_at=long_ago,
    )
    assert subject_erase(actor=actor(admin), application=app, subject=SUBJECT).content_rows == 2
