"""Authenticating a gateway request: an application key in the ``Authorization`` header only."""

from __future__ import annotations

import redis
from asgiref.sync import sync_to_async
from django.http import HttpRequest

from appliance.core import redis as shared_redis
from appliance.core.changes import GENERATION_KEY, local_generation
from appliance.gateway.errors import GatewayError, unauthenticated
from appliance.gateway.principals import (
    KeyRefused,
    Principal,
    PrincipalCache,
    principal_load,
    well_formed,
)

# Query parameters that clients and proxies use for keys; a key there would end up in logs.
KEY_PARAMETERS = ("api_key", "api-key", "apikey", "key", "token", "access_token")
REFUSALS = {
    "unknown": (401, "Incorrect API key provided.", "invalid_api_key"),
    "revoked": (401, "This API key has been revoked.", "api_key_revoked"),
    "expired": (401, "This API key has expired.", "api_key_expired"),
    "disabled": (403, "The application is disabled.", "application_disabled"),
}

cache = PrincipalCache()


async def _generation() -> tuple[int, int | None]:
    """The access generation: this process's changes, and everyone's through Redis."""
    shared = None
    if shared_redis.available():
        try:
            value = await shared_redis.async_client().get(GENERATION_KEY)
            shared = int(value or 0)
        except redis.RedisError as exc:
            shared_redis.mark_down(exc)
    return local_generation(), shared


def _refused(reason: str) -> GatewayError:
    status, message, code = REFUSALS[reason]
    if status == 401:
        return unauthenticated(message, code=code)
    return GatewayError(status, message, type="permission_error", code=code)


async def authenticate(request: HttpRequest) -> Principal:
    if any(name in request.GET for name in KEY_PARAMETERS):
        raise unauthenticated(
            "API keys are accepted only in the Authorization header, never in the URL.",
            code="api_key_in_url",
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated(
            "Send your API key in the Authorization header: `Bearer apk_…`.",
            code="missing_api_key",
        )
    if not well_formed(token):
        raise _refused("unknown")
    generation = await _generation()
    outcome = cache.get(token, generation)
    if outcome is None:
        try:
            outcome = await sync_to_async(principal_load)(token)
        except KeyRefused as exc:
            outcome = exc
        cache.put(token, generation, outcome)
    if isinstance(outcome, KeyRefused):
        raise _refused(outcome.reason)
    if outcome.expired():
        raise _refused("expired")
    return outcome
