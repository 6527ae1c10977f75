"""The gateway's own ASGI handler: the same Django project and URLs, with only async middleware,
so a /v1 request never hops to a worker thread on its way to the view (the console's middleware
includes sync-only WhiteNoise)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

from appliance.gateway.errors import GatewayError

MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "appliance.core.middleware.RequestContextMiddleware",
)


class GatewayHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse a body declared too large before Django spools it (and before anything else).

        Unlike Django's handler, requests are not each given their own thread for database work
        (``ThreadSensitiveContext``): that meant a new thread and a new database connection per
        request. All of this process's gateway database work shares one thread and its
        persistent connection; the records of concurrent requests are committed together
        (appliance.gateway.recorder)."""
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        limit = settings.APPLIANCE_GATEWAY_MAX_BODY_BYTES
        if declared.isdigit() and int(declared) > limit:
            error = GatewayError(
                413, f"The request body is larger than {limit} bytes.", code="request_too_large"
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": json.dumps(error.body()).encode()})
            return
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler: Any = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for dotted in reversed(MIDDLEWARE):
            handler = convert_exception_to_response(import_string(dotted)(handler))
        self._middleware_chain = handler
