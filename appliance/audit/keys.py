"""The appliance's audit signing key (Ed25519) and the signed notes it produces.

A checkpoint is a C2SP signed note: the body ``origin\\ntree_size\\nbase64(root)\\n`` followed by a
blank line and ``— <origin> base64(key id || signature)``, where the key id is the first four bytes
of SHA-256(name || 0x0A || 0x01 || public key). Auditors pin the key by its fingerprint,
``sha256:`` + hex SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.db import IntegrityError, transaction
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.models import AuditSigningKey
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.crypto import KeyUnavailable, unwrap, wrap
from appliance.core.errors import DomainError

PURPOSE = "audit.signing-key"
ED25519_NOTE_TYPE = b"\x01"


def fingerprint_of(public_key: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def public_pem(public_key: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def note_body(origin: str, tree_size: int, root: bytes) -> bytes:
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode('ascii')}\n".encode()


def note_text(origin: str, body: bytes, public_key: bytes, signature: bytes) -> str:
    """The whole signed note, as C2SP writes it."""
    key_hash = hashlib.sha256(origin.encode() + b"\n" + ED25519_NOTE_TYPE + public_key).digest()
    stamp = base64.b64encode(key_hash[:4] + signature).decode("ascii")
    return f"{body.decode()}\n\u2014 {origin} {stamp}\n"


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """An unwrapped signing key, held only as long as the signing takes."""

    row: AuditSigningKey
    private: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return bytes.fromhex(self.row.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


class SigningKeyUnavailable(DomainError):
    """The signing key is stored but its master key is not configured (or it was tampered with)."""

    status = 503
    code = "signing_key_unavailable"


def signer_of(row: AuditSigningKey) -> Signer:
    try:
        raw = unwrap(row.private_key, purpose=f"{PURPOSE}:{row.fingerprint}")
    except KeyUnavailable as exc:
        raise SigningKeyUnavailable(
            f"The audit signing key {row.fingerprint} cannot be unwrapped ({exc}); restore the "
            "master key it was wrapped with (APPLIANCE_MASTER_KEY or var/master.key)."
        ) from None
    return Signer(row=row, private=Ed25519PrivateKey.from_private_bytes(raw))


def _signing_key_create(*, actor: Actor) -> AuditSigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    fingerprint = fingerprint_of(public)
    row = AuditSigningKey.objects.create(
        fingerprint=fingerprint,
        public_key=public.hex(),
        private_key=wrap(raw_private, purpose=f"{PURPOSE}:{fingerprint}"),
    )
    audit_record(
        actor=actor,
        action="audit.signing_key_create",
        object_type="signing_key",
        object_id=row.pk,
        details={"fingerprint": fingerprint},
    )
    return row


def signing_key_active() -> AuditSigningKey:
    """The key that signs now, generated (and audited) the first time it is needed."""
    row = AuditSigningKey.objects.filter(retired_at__isnull=True).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return _signing_key_create(actor=system_actor("audit"))
    except IntegrityError:  # another process created it first
        return AuditSigningKey.objects.get(retired_at__isnull=True)


def signing_key_rotate(*, actor: Actor) -> AuditSigningKey:
    """Retire the active key and start signing with a new one. Old checkpoints keep naming the
    key that signed them, so they stay verifiable; exports carry every key they rely on."""
    require(actor, Capability.AUDIT_MANAGE)
    with transaction.atomic():
        old = AuditSigningKey.objects.select_for_update().filter(retired_at__isnull=True).first()
        if old is not None:
            old.retired_at = timezone.now()
            old.save(update_fields=["retired_at"])
        new = _signing_key_create(actor=actor)
        audit_record(
            actor=actor,
            action="audit.signing_key_rotate",
            object_type="signing_key",
            object_id=new.pk,
            details={"retired": old.fingerprint if old else "", "active": new.fingerprint},
        )
    return new
