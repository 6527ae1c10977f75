"""The master key and what it protects: AES-256-GCM wrapping of smaller keys.

The master key never encrypts data itself. It wraps keys (the audit signing key, per-subject data
keys), so rotating it re-wraps a few hundred bytes per key and never touches stored content.

It comes from ``APPLIANCE_MASTER_KEY`` (or ``APPLIANCE_MASTER_KEY_FILE``), else from the key file
``var/master.key`` (mode 0600, generated on first start). ``APPLIANCE_MASTER_KEY_PREVIOUS`` lists
retired master keys that may still unwrap during and after a rotation. A wrapped value names the
key that wrapped it: ``mk1:<key id>:<base64url(nonce || ciphertext || tag)>``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from appliance.core.env import env_list, env_secret

WRAP_VERSION = "mk1"
NONCE_BYTES = 12
KEY_BYTES = 32


class KeyUnavailable(Exception):
    """A wrapped value whose master key is not configured, or that fails authentication."""


def key_id(key: bytes) -> str:
    """A short public name for a key: the first 16 hex digits of SHA-256 over it."""
    return hashlib.sha256(b"appliance.master-key-id:" + key).hexdigest()[:16]


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def decode_key(text: str, *, name: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured(f"{name} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ImproperlyConfigured(f"{name} must be {KEY_BYTES} bytes (base64), not {len(key)}")
    return key


def master_key_path() -> Path:
    return Path(settings.APPLIANCE_MASTER_KEY_PATH)


def _key_file(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) if absent. The key is written to a private temp
    file and linked into place, so a process starting at the same moment sees either no file or
    a whole key, and of two such processes exactly one key wins."""
    if not path.exists():
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".master-key-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:  # mkstemp: mode 0600
                handle.write(encode_key(secrets.token_bytes(KEY_BYTES)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(temp, path)
        finally:
            os.unlink(temp)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ImproperlyConfigured(
            f"{path} is readable by others (mode {mode:o}); run chmod 600 on it."
        )
    return decode_key(path.read_text(encoding="ascii"), name=str(path))


@cache
def master_keys() -> tuple[bytes, tuple[bytes, ...]]:
    """The current master key and the retired ones still accepted for unwrapping."""
    configured = env_secret("APPLIANCE_MASTER_KEY")
    current = (
        decode_key(configured, name="APPLIANCE_MASTER_KEY")
        if configured
        else _key_file(master_key_path())
    )
    previous = tuple(
        decode_key(text, name="APPLIANCE_MASTER_KEY_PREVIOUS")
        for text in env_list("APPLIANCE_MASTER_KEY_PREVIOUS", [])
    )
    return current, previous


def current_master_key_id() -> str:
    return key_id(master_keys()[0])


def wrap(plaintext: bytes, *, purpose: str) -> str:
    """Encrypt a key under the current master key; ``purpose`` is bound as associated data, so a
    wrapped value copied to another purpose (or row) does not unwrap."""
    key = master_keys()[0]
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, purpose.encode("utf-8"))
    body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
    return f"{WRAP_VERSION}:{key_id(key)}:{body}"


def unwrap(wrapped: str, *, purpose: str) -> bytes:
    """The key inside ``wrapped``; raises KeyUnavailable if its master key is gone or it was
    tampered with or moved."""
    try:
        version, wrapped_by, body = wrapped.split(":", 2)
        raw = base64.urlsafe_b64decode(body)
    except (ValueError, binascii.Error):
        raise KeyUnavailable("the wrapped key is malformed") from None
    if version != WRAP_VERSION:
        raise KeyUnavailable(f"unknown wrapping version {version!r}")
    current, previous = master_keys()
    key = next((k for k in (current, *previous) if key_id(k) == wrapped_by), None)
    if key is None:
        raise KeyUnavailable(f"master key {wrapped_by} is not configured")
    try:
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode("utf-8"))
    except InvalidTag:
        raise KeyUnavailable("the wrapped key failed authentication") from None


def wrapped_by(wrapped: str) -> str:
    """The id of the master key that wrapped a value."""
    return wrapped.split(":", 2)[1] if wrapped.count(":") >= 2 else ""
