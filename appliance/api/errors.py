"""One handler per error family, all answering with the one error body (docs/api.md).

Permission denials are audited here, once, whatever service raised them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import ANONYMOUS, Actor
from appliance.core.context import current_request_id
from appliance.core.errors import DomainError, PermissionDenied, Throttled

logger = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "throttled",
}


def error_body(
    code: str, detail: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "code": code,
        "detail": detail,
        "fields": fields or {},
        "request_id": current_request_id(),
    }


def _location(loc: Any) -> str:
    # ninja prefixes where the value came from ("body", "query", "path"); the field is what counts.
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "form", "file", "payload", "filters")
    ]
    return ".".join(parts) or "__all__"


def install(api: NinjaAPI) -> None:
    """Register the handlers on a NinjaAPI instance."""

    @api.exception_handler(DomainError)
    def domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
        if isinstance(exc, PermissionDenied):
            _audit_denial(request, exc)
        response = api.create_response(
            request, error_body(exc.code, exc.detail, exc.fields), status=exc.status
        )
        if isinstance(exc, Throttled):
            response["Retry-After"] = str(exc.retry_after)
        return response

    @api.exception_handler(NinjaValidationError)
    def validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        fields: dict[str, list[str]] = {}
        for err in exc.errors:
            fields.setdefault(_location(err.get("loc", ())), []).append(str(err.get("msg", "")))
        return api.create_response(
            request,
            error_body("validation_error", "The request is not valid.", fields),
            status=422,
        )

    @api.exception_handler(AuthenticationError)
    def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return api.create_response(
            request,
            error_body(
                "not_authenticated", "Sign in, or send a valid API token as a Bearer token."
            ),
            status=401,
        )

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        return api.create_response(request, error_body(code, str(exc)), status=exc.status_code)

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return api.create_response(request, error_body("not_found", "Not found."), status=404)

    @api.exception_handler(Exception)
    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        # Never echo the exception: it may carry input. The request id finds the log line.
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return api.create_response(
            request,
            error_body("internal_error", "Something went wrong; quote the request id to support."),
            status=500,
        )


def _audit_denial(request: HttpRequest, exc: PermissionDenied) -> None:
    actor = getattr(request, "auth", None)
    try:
        audit_record(
            actor=actor if isinstance(actor, Actor) else ANONYMOUS,
            action="permission.denied",
            outcome=Outcome.DENIED,
            details={"method": request.method, "path": request.path, "code": exc.code},
        )
    except DomainError:
        logger.error("permission denial could not be audited")
