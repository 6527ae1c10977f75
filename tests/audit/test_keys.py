"""The signing key: generated on first use, stored wrapped by the master key, rotated without
breaking old checkpoints; the master key file itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from appliance.accounts.models import User
from appliance.audit.checkpoints import checkpoint_create, checkpoint_signature_valid
from appliance.audit.keys import signer_of, signing_key_active, signing_key_rotate
from appliance.audit.models import AuditCheckpoint, AuditEvent, AuditSigningKey
from appliance.audit.services import audit_record
from appliance.audit.verification import audit_verify
from appliance.core.actors import system_actor
from appliance.core.crypto import KeyUnavailable, master_keys, unwrap, wrap
from appliance.core.errors import PermissionDenied
from tests.conftest import actor

pytestmark = pytest.mark.django_db


def test_first_use_generates_one_key_and_audits_it() -> None:
    key = signing_key_active()
    assert signing_key_active() == key
    assert AuditSigningKey.objects.count() == 1
    event = AuditEvent.objects.get(action="audit.signing_key_create")
    assert event.details == {"fingerprint": key.fingerprint}


def test_private_key_is_never_stored_in_the_clear() -> None:
    key = signing_key_active()
    raw = signer_of(key).private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditsigningkey")
        row = " ".join(str(v) for v in cursor.fetchone())
    assert raw.hex() not in row
    assert raw.hex().upper() not in row
    assert key.private_key.startswith("mk1:")


def test_a_wrapped_key_does_not_unwrap_for_another_purpose() -> None:
    wrapped = wrap(b"k" * 32, purpose="audit.signing-key:sha256:aa")
    assert unwrap(wrapped, purpose="audit.signing-key:sha256:aa") == b"k" * 32
    with pytest.raises(KeyUnavailable, match="authentication"):
        unwrap(wrapped, purpose="audit.signing-key:sha256:bb")


def test_rotation_keeps_old_checkpoints_verifiable(admin: User) -> None:
    audit_record(actor=system_actor(), action="test.event")
    old_checkpoint = checkpoint_create()
    old = signing_key_active()
    new = signing_key_rotate(actor=actor(admin))
    assert new != old
    old.refresh_from_db()
    assert old.retired_at is not None
    new_checkpoint = checkpoint_create()
    assert old_checkpoint is not None and new_checkpoint is not None
    assert (old_checkpoint.key, new_checkpoint.key) == (old, new)
    assert all(checkpoint_signature_valid(c) for c in AuditCheckpoint.objects.all())
    assert audit_verify(actor=actor(admin)).valid
    rotate = AuditEvent.objects.get(action="audit.signing_key_rotate")
    assert rotate.details == {"retired": old.fingerprint, "active": new.fingerprint}
    assert rotate.actor_label == admin.username


def test_only_admins_rotate(auditor: User) -> None:
    signing_key_active()
    with pytest.raises(PermissionDenied):
        signing_key_rotate(actor=actor(auditor))
    assert AuditSigningKey.objects.filter(retired_at__isnull=True).count() == 1


def test_fingerprint_command_prints_the_active_and_retired_keys(
    admin: User, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("audit", "rotate-key", "--as", admin.username)
    call_command("audit", "fingerprint", "--pem")
    out = capsys.readouterr().out
    active = signing_key_active()
    assert active.fingerprint in out and "BEGIN PUBLIC KEY" in out
    retired = AuditSigningKey.objects.exclude(pk=active.pk).get()
    assert f"retired {retired.retired_at:%Y-%m-%d}: {retired.fingerprint}" in out


def test_master_key_file_is_generated_private(settings: Any) -> None:
    path = Path(settings.APPLIANCE_MASTER_KEY_PATH)
    assert not path.exists()
    current, previous = master_keys()
    assert len(current) == 32 and previous == ()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_master_key_file_others_can_read_is_refused(settings: Any) -> None:
    path = Path(settings.APPLIANCE_MASTER_KEY_PATH)
    master_keys()
    os.chmod(path, 0o644)
    master_keys.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="chmod 600"):
        master_keys()


def test_values_wrapped_by_an_unconfigured_master_key_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrapped = wrap(b"secret", purpose="p")
    monkeypatch.setenv("APPLIANCE_MASTER_KEY", "A" * 43)
    master_keys.cache_clear()
    with pytest.raises(KeyUnavailable, match="is not configured"):
        unwrap(wrapped, purpose="p")


def test_a_malformed_master_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_MASTER_KEY", "too-short")
    master_keys.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="APPLIANCE_MASTER_KEY"):
        master_keys()
