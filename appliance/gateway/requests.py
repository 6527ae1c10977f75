"""Checking an inference request before it goes anywhere: size, content type, JSON, the fields the
gateway relies on, and the application's per-request token cap."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from appliance.gateway.choices import Endpoint
from appliance.gateway.errors import GatewayError, invalid
from appliance.gateway.principals import Limits
from appliance.privacy.keys import SUBJECT_RULE, subject_valid

REQUIRED: dict[str, tuple[str, type | tuple[type, ...]]] = {
    Endpoint.CHAT: ("messages", list),
    Endpoint.COMPLETIONS: ("prompt", (str, list)),
    Endpoint.EMBEDDINGS: ("input", (str, list)),
}
TOKEN_FIELDS = ("max_completion_tokens", "max_tokens")
SUBJECT_HEADER = "X-Appliance-Subject"
MAX_N = 16


def request_body(request: HttpRequest, endpoint: str) -> dict[str, Any]:
    """The JSON body, or a GatewayError (413, 415, 400, 422)."""
    limit = settings.APPLIANCE_GATEWAY_MAX_BODY_BYTES
    too_big = GatewayError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise GatewayError(
            415, "Send the request body as application/json.", code="unsupported_media_type"
        )
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(raw) > limit:
        raise too_big
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            400, "The request body is not valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_body")
    _check_fields(body, endpoint)
    return body


def _check_fields(body: dict[str, Any], endpoint: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("`model` is required: the name of a model or adapter.", param="model")
    name, kind = REQUIRED[endpoint]
    value = body.get(name)
    if value is None or not isinstance(value, kind) or (isinstance(value, list) and not value):
        raise invalid(f"`{name}` is required.", param=name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) or (stream and endpoint == Endpoint.EMBEDDINGS):
        raise invalid("`stream` must be true or false (and false for embeddings).", param="stream")
    for field in TOKEN_FIELDS:
        tokens = body.get(field)
        if tokens is not None and (
            not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1
        ):
            raise invalid(f"`{field}` must be a positive integer.", param=field)
    for field in ("n", "best_of"):
        count = body.get(field)
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_N
        ):
            raise invalid(f"`{field}` must be an integer from 1 to {MAX_N}.", param=field)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("`stream_options` must be an object.", param="stream_options")


def cap_tokens(body: dict[str, Any], limits: Limits, endpoint: str) -> None:
    """Refuse a request that asks for more tokens than the application may; cap one that does not
    say, so the engine never generates past the limit."""
    cap = limits.max_tokens_per_request
    if cap is None or endpoint == Endpoint.EMBEDDINGS:
        return
    choices = max(body.get("n") or 1, body.get("best_of") or 1)  # each choice generates
    for field in TOKEN_FIELDS:
        asked = body.get(field)
        if asked is not None and asked * choices > cap:
            raise invalid(
                f"`{field}` times the choices is {asked * choices}; this application may ask for at "
                f"most {cap} tokens per request.",
                param=field,
                code="max_tokens_exceeded",
            )
    if all(body.get(field) is None for field in TOKEN_FIELDS):
        if choices > cap:
            raise invalid(
                f"{choices} choices exceed this application's {cap} tokens per request.",
                param="n",
                code="max_tokens_exceeded",
            )
        body["max_tokens"] = cap // choices


def wants_usage(body: dict[str, Any]) -> bool:
    for field in ("n", "best_of"):
        count = body.get(field)
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_N
        ):
            raise invalid(f"`{field}` must be an integer from 1 to {MAX_N}.", param=field)
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage"))


def content_subject(request: HttpRequest) -> str | None:
    """The data subject named by ``X-Appliance-Subject`` (None: the application itself); asked
    only where the application's content is kept. A 400 if the header is malformed."""
    subject = request.headers.get(SUBJECT_HEADER)
    if subject is None:
        return None
    if not subject_valid(subject):
        raise GatewayError(
            400,
            f"`{SUBJECT_HEADER}` must be {SUBJECT_RULE} (a patient or customer id, say), "
            "or be left out to file the content under the application itself.",
            code="invalid_subject",
        )
    return subject
