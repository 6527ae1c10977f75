"""Domain errors: the one error contract of the management API.

Services raise these; one exception handler (appliance.api.errors) turns each into the JSON shape
documented in docs/api.md: ``{"code", "detail", "fields", "request_id"}``. The ``code`` is stable and
machine-readable; ``detail`` is for people.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service may raise on purpose."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields or {}


class ValidationFailed(DomainError):
    """The input is well-formed but breaks a rule (422)."""

    status = 422
    code = "validation_error"


class NotAuthenticated(DomainError):
    """No valid credentials (401)."""

    status = 401
    code = "not_authenticated"


class PermissionDenied(DomainError):
    """The caller is known but may not do this (403)."""

    status = 403
    code = "permission_denied"


class NotFound(DomainError):
    """The object does not exist, or the caller may not know it exists (404)."""

    status = 404
    code = "not_found"


class Conflict(DomainError):
    """The request clashes with the current state (409), e.g. a duplicate name or a wrong status."""

    status = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    """An upload or body over its limit (413)."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    """The body is not in a content type the endpoint accepts (415)."""

    status = 415
    code = "unsupported_media_type"


class Throttled(DomainError):
    """Too many attempts (429); ``retry_after`` is in seconds."""

    status = 429
    code = "throttled"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class AuditUnavailable(DomainError):
    """The audit event could not be written, so the change was not made (503)."""

    status = 503
    code = "audit_unavailable"
