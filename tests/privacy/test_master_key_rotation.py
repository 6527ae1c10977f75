"""``master_key_rotate`` and ``manage.py master_key``: every subject key and audit signing key is
re-wrapped under the current master key, stored content is untouched, and after the old key is
dropped everything still unwraps; with neither key, content is unavailable with a clear error."""

from __future__ import annotations

import json
import secrets
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from appliance.access.models import Application
from appliance.accounts import mfa
from appliance.accounts.models import TotpDevice
from appliance.audit.keys import PURPOSE as SIGNING_KEY_PURPOSE
from appliance.audit.keys import signer_of, signing_key_active, signing_key_rotate
from appliance.audit.models import AuditEvent, AuditSigningKey
from appliance.core.crypto import (
    KEY_BYTES,
    KeyUnavailable,
    current_master_key_id,
    decode_key,
    encode_key,
    key_id,
    master_keys,
    unwrap,
    wrapped_by,
)
from appliance.core.errors import PermissionDenied
from appliance.privacy.errors import MasterKeyUnavailable
from appliance.privacy.models import StoredContent, SubjectKey
from appliance.privacy.services import content_read, master_key_rotate, subject_erase
from appliance.routing.evaluations import evaluation_set_create, items_of
from appliance.routing.models import EvaluationSet
from tests.conftest import actor, fresh_code, with_authenticator
from tests.privacy.conftest import MESSAGES, SUBJECT, store_exchange


@pytest.fixture
def stored(application: Any, admin: Any) -> Application:
    """Content of two subjects (one of them erased since) and two audit signing keys (one
    retired), all wrapped by the first master key (the test's key file)."""
    app, _ = application()
    store_exchange(app, request_id="req-00000001", subject="MRN-1")
    store_exchange(app, request_id="req-00000002", subject="MRN-2")
    store_exchange(app, request_id="req-00000003", subject="MRN-gone")
    subject_erase(actor=actor(admin), application=app, subject="MRN-gone")
    signing_key_active()
    signing_key_rotate(actor=actor(admin))
    return app


def ciphertexts() -> dict[int, bytes]:
    return {row.pk: bytes(row.ciphertext) for row in StoredContent.objects.all()}


def test_rotation_rewraps_every_key_and_leaves_content_alone(
    stored: Application, admin: Any, use_master_keys: Any
) -> None:
    old, new = master_keys()[0], secrets.token_bytes(KEY_BYTES)
    before = ciphertexts()
    use_master_keys(new, old)

    result = master_key_rotate(actor=actor(admin))

    assert (result.subject_keys, result.signing_keys, result.already_current) == (2, 2, 0)
    assert (result.new_key_id, result.previous_key_ids) == (key_id(new), [key_id(old)])
    live = SubjectKey.objects.filter(erased_at__isnull=True)
    assert {wrapped_by(k.wrapped_key) for k in live} == {key_id(new)}
    assert {wrapped_by(k.private_key) for k in AuditSigningKey.objects.all()} == {key_id(new)}
    assert SubjectKey.objects.get(erased_at__isnull=False).wrapped_key == ""
    assert ciphertexts() == before

    use_master_keys(new)  # the old key removed
    for request_id in ("req-00000001", "req-00000002"):
        assert content_read(actor=actor(admin), request_id=request_id).exchanges[0].prompt == (
            MESSAGES
        )
    for row in AuditSigningKey.objects.all():
        assert signer_of(row).sign(b"still signs")

    event = AuditEvent.objects.get(action="privacy.master_key_rotate")
    assert event.details == {
        "new_key_id": key_id(new),
        "previous_key_ids": [key_id(old)],
        "subject_keys": 2,
        "signing_keys": 2,
        "evaluation_sets": 0,
        "totp_secrets": 0,
        "already_current": 0,
    }
    text = json.dumps(event.details)
    assert encode_key(new) not in text and encode_key(old) not in text


def test_with_neither_key_content_is_unavailable_with_a_clear_error(
    stored: Application, admin: Any, use_master_keys: Any
) -> None:
    old = master_keys()[0]
    use_master_keys(secrets.token_bytes(KEY_BYTES))
    with pytest.raises(MasterKeyUnavailable) as unavailable:
        content_read(actor=actor(admin), request_id="req-00000001")
    assert unavailable.value.status == 503
    assert f"master key {key_id(old)} is not configured" in unavailable.value.detail
    assert "APPLIANCE_MASTER_KEY_PREVIOUS" in unavailable.value.detail
    signing_key = AuditSigningKey.objects.first()
    assert signing_key is not None
    with pytest.raises(KeyUnavailable, match="is not configured"):
        unwrap(signing_key.private_key, purpose=f"{SIGNING_KEY_PURPOSE}:{signing_key.fingerprint}")


def test_rotation_without_the_old_key_changes_nothing(
    stored: Application, admin: Any, use_master_keys: Any
) -> None:
    wrapped = sorted(SubjectKey.objects.values_list("wrapped_key", flat=True))
    events = AuditEvent.objects.count()
    use_master_keys(secrets.token_bytes(KEY_BYTES))
    with pytest.raises(MasterKeyUnavailable, match="nothing was changed"):
        master_key_rotate(actor=actor(admin))
    assert sorted(SubjectKey.objects.values_list("wrapped_key", flat=True)) == wrapped
    assert AuditEvent.objects.count() == events


def test_rotating_twice_rewraps_nothing_the_second_time(
    stored: Application, admin: Any, use_master_keys: Any
) -> None:
    use_master_keys(secrets.token_bytes(KEY_BYTES), master_keys()[0])
    master_key_rotate(actor=actor(admin))
    again = master_key_rotate(actor=actor(admin))
    assert (again.subject_keys, again.signing_keys, again.already_current) == (0, 0, 4)
    assert again.previous_key_ids == []


@pytest.mark.parametrize("role", ["operator", "auditor", "app_owner"])
def test_only_admins_rotate(stored: Application, role: str, request: pytest.FixtureRequest) -> None:
    with pytest.raises(PermissionDenied):
        master_key_rotate(actor=actor(request.getfixturevalue(role)))


def test_the_command_generates_a_usable_key() -> None:
    out, err = StringIO(), StringIO()
    call_command("master_key", "generate", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert len(decode_key(key, name="generated")) == KEY_BYTES
    assert "APPLIANCE_MASTER_KEY_PREVIOUS" in err.getvalue()


def test_the_command_rotates_and_reports(
    stored: Application, use_master_keys: Any, admin: Any
) -> None:
    old, new = master_keys()[0], secrets.token_bytes(KEY_BYTES)
    use_master_keys(new, old)
    status = StringIO()
    call_command("master_key", "status", stdout=status)
    assert f"subject keys by master key: {key_id(old)}: 2" in status.getvalue()

    out = StringIO()
    call_command("master_key", "rotate", stdout=out)
    assert (
        "Re-wrapped 2 subject key(s), 2 signing key(s), 0 evaluation set(s) and 0 authenticator"
        in out.getvalue()
    )
    assert key_id(new) in out.getvalue() and key_id(old) in out.getvalue()
    event = AuditEvent.objects.get(action="privacy.master_key_rotate")
    assert event.actor_kind == "system"

    status = StringIO()
    call_command("master_key", "status", stdout=status)
    assert f"{key_id(new)} (current): 2" in status.getvalue()
    assert key_id(old) not in status.getvalue()
    assert current_master_key_id() == key_id(new)


def test_the_command_explains_a_missing_key(stored: Application, use_master_keys: Any) -> None:
    use_master_keys(secrets.token_bytes(KEY_BYTES))
    with pytest.raises(CommandError, match="APPLIANCE_MASTER_KEY_PREVIOUS"):
        call_command("master_key", "rotate", stdout=StringIO())


def test_the_subject_key_purpose_binds_it_to_its_subject(stored: Application) -> None:
    key = SubjectKey.objects.filter(erased_at__isnull=True).first()
    assert key is not None
    assert key.purpose == f"privacy.subject-key:{stored.pk}:{key.subject}"
    assert SUBJECT not in key.purpose


def test_rotation_rewraps_evaluation_sets_and_they_still_open(
    admin: Any, use_master_keys: Any
) -> None:
    line = json.dumps(
        {"messages": [{"role": "user", "content": "Dose for MRN-7?"}], "expected": "5 mg"}
    )
    made = evaluation_set_create(
        actor=actor(admin), name="doses", jsonl=line, default_scorer={"type": "contains"}
    )
    assert "MRN-7" not in made.items_sealed  # kept encrypted, like other content
    old, new = master_keys()[0], secrets.token_bytes(KEY_BYTES)
    use_master_keys(new, old)

    result = master_key_rotate(actor=actor(admin))

    assert result.evaluation_sets == 1
    use_master_keys(new)
    again = EvaluationSet.objects.get(pk=made.pk)
    assert wrapped_by(again.items_sealed) == key_id(new)
    assert items_of(again)[0]["messages"][0]["content"] == "Dose for MRN-7?"


def test_rotation_rewraps_authenticator_secrets_and_codes_still_check(
    admin: Any, use_master_keys: Any
) -> None:
    secret = with_authenticator(admin)
    old, new = master_keys()[0], secrets.token_bytes(KEY_BYTES)
    use_master_keys(new, old)

    result = master_key_rotate(actor=actor(admin))

    assert result.totp_secrets == 1
    use_master_keys(new)
    device = TotpDevice.objects.get(user=admin)
    assert wrapped_by(device.secret_wrapped) == key_id(new)
    assert mfa.device_secret(device) == secret
    assert mfa.mfa_verify(user=admin, code=fresh_code(admin)) == mfa.Method.TOTP
