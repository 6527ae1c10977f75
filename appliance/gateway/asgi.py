"""The gateway's own ASGI handler: the same Django project and URLs, with only async middleware,
so a /v1 request never hops to a worker thread on its way to the view (the console's middleware
includes sync-only WhiteNoise)."""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "appliance.core.middleware.RequestContextMiddleware",
)


class GatewayHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler: Any = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for dotted in reversed(MIDDLEWARE):
            handler = convert_exception_to_response(import_string(dotted)(handler))
        self._middleware_chain = handler
