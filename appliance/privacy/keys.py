"""Subject data keys and the AES-256-GCM sealing of content under them.

A subject is named by the caller (the ``X-Appliance-Subject`` header: a patient or customer id),
or is the application itself when it names none. Only its pseudonym is stored.
"""

from __future__ import annotations

import re
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import IntegrityError, transaction

from appliance.core.crypto import KEY_BYTES, NONCE_BYTES, unwrap, wrap
from appliance.core.secrets import pseudonym
from appliance.privacy.models import SubjectKey, subject_key_purpose

# Printable ASCII only: a header arrives as bytes, and anything else would be read differently by
# the gateway (latin-1) and by an erasure request (UTF-8 JSON), giving two pseudonyms for one id.
SUBJECT_PATTERN = re.compile(r"[\x20-\x7e]{1,128}")
SUBJECT_RULE = "1 to 128 printable ASCII characters"
# Content sent without a subject belongs to the application. NUL cannot occur in a valid subject,
# so no caller-chosen subject shares this pseudonym.
APPLICATION_SUBJECT = "\x00application"


def subject_valid(subject: str) -> bool:
    return SUBJECT_PATTERN.fullmatch(subject) is not None


def subject_pseudonym(subject: str | None) -> str:
    """The stored name of a subject: the pseudonym of its id, or of the application itself."""
    return pseudonym(APPLICATION_SUBJECT if subject is None else subject)


def subject_key_live(*, application_id: int, subject: str) -> tuple[SubjectKey, bytes]:
    """The subject's live key row and its data key, created on first use. ``subject`` is the
    pseudonym. Raises KeyUnavailable if the master key that wrapped it is not configured."""
    row = SubjectKey.objects.filter(
        application_id=application_id, subject=subject, erased_at__isnull=True
    ).first()
    if row is not None:
        return row, unwrap(row.wrapped_key, purpose=row.purpose)
    data_key = secrets.token_bytes(KEY_BYTES)
    purpose = subject_key_purpose(application_id, subject)
    try:
        with transaction.atomic():
            row = SubjectKey.objects.create(
                application_id=application_id,
                subject=subject,
                wrapped_key=wrap(data_key, purpose=purpose),
            )
    except IntegrityError:  # another request created it first: use that one
        row = SubjectKey.objects.get(
            application_id=application_id, subject=subject, erased_at__isnull=True
        )
        return row, unwrap(row.wrapped_key, purpose=row.purpose)
    return row, data_key


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || ciphertext || tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext; raises cryptography's InvalidTag if the bytes, the key or the row differ."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
