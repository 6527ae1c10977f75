"""Random credentials and how they are stored: prefix + SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings


def new_credential(kind: str) -> tuple[str, str, str]:
    """A fresh credential ``{kind}_{prefix}_{secret}`` (32 random bytes) with its prefix and hash.

    The prefix finds the row; the hash proves possession. High-entropy secrets need no slow hash.
    """
    prefix = secrets.token_hex(6)
    token = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return token, prefix, hash_credential(token)


def hash_credential(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def split_credential(token: str, kind: str) -> str | None:
    """The prefix of a token of this kind, or None if it is not shaped like one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != 12:
        return None
    return parts[1]


def credential_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_credential(token), stored_hash)


def generate_password() -> str:
    """A password for a new account, shown once: 24 URL-safe characters (~143 bits)."""
    return secrets.token_urlsafe(18)


def pseudonym(value: str) -> str:
    """``hmac-sha256:`` + HMAC of a personal identifier: linkable across events, not readable."""
    key = hashlib.sha256(b"appliance.audit.pseudonym:" + settings.SECRET_KEY.encode()).digest()
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
