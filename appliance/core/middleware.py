"""Middleware that gives each request an id and records where it came from."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from appliance.core.context import request_id_var, source_ip_var

# A caller may pass its own id (to correlate with its logs) if it is short and plain.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class DualMiddleware:
    """A middleware that runs in the chain's own mode, sync or async, so the gateway's async
    views never hop to a thread for it; subclasses branch on ``is_async`` in ``__call__``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        raise NotImplementedError


class RequestContextMiddleware(DualMiddleware):
    """Sets the request id and source address for the request and echoes ``X-Request-ID``."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        tokens = self._enter(request)
        try:
            response = self.get_response(request)
        finally:
            self._exit(tokens)
        return self._tag(response, tokens[2])

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        tokens = self._enter(request)
        try:
            response = await self.get_response(request)
        finally:
            self._exit(tokens)
        return self._tag(response, tokens[2])

    @staticmethod
    def _enter(request: HttpRequest) -> tuple[Any, Any, str]:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        return (
            request_id_var.set(request_id),
            source_ip_var.set(request.META.get("REMOTE_ADDR", "")),
            request_id,
        )

    @staticmethod
    def _exit(tokens: tuple[Any, Any, str]) -> None:
        request_id_var.reset(tokens[0])
        source_ip_var.reset(tokens[1])

    @staticmethod
    def _tag(response: HttpResponseBase, request_id: str) -> HttpResponseBase:
        response["X-Request-ID"] = request_id
        return response
