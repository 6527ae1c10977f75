"""Random credentials and how they are stored: prefix + SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TypeVar

from django.conf import settings
from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


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


def find_credential(
    queryset: QuerySet[M], token: str, kind: str, *, hash_field: str, prefix_field: str = "prefix"
) -> M | None:
    """The row whose credential ``token`` is: found by its prefix, proven by its hash in
    constant time. Revocation and expiry are the caller's to check."""
    prefix = split_credential(token, kind)
    if prefix is None:
        return None
    row = queryset.filter(**{prefix_field: prefix}).first()
    if row is None or not credential_matches(token, getattr(row, hash_field)):
        return None
    return row


def derived_key(purpose: str) -> bytes:
    """A key for one purpose, derived from SECRET_KEY (rotating it rotates them all)."""
    return hashlib.sha256(f"appliance.{purpose}:".encode() + settings.SECRET_KEY.encode()).digest()


def generate_password() -> str:
    """A password for a new account, shown once: 24 URL-safe characters (~143 bits)."""
    return secrets.token_urlsafe(18)


def pseudonym(value: str) -> str:
    """``hmac-sha256:`` + HMAC of a personal identifier: linkable across events, not readable."""
    key = derived_key("audit.pseudonym")
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
