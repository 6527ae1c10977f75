"""Domain errors of stored content, in the management API's one error contract."""

from __future__ import annotations

from appliance.core.errors import DomainError


class ContentErased(DomainError):
    """The content was erased with its data subject's key (410): it is gone for good."""

    status = 410
    code = "erased"


class MasterKeyUnavailable(DomainError):
    """A key is wrapped by a master key this process is not configured with (503)."""

    status = 503
    code = "master_key_unavailable"


class ContentIntegrityFailed(DomainError):
    """Stored ciphertext failed authentication: altered, or moved from another row (500)."""

    status = 500
    code = "content_integrity_failed"
