"""ASGI entry point (uvicorn): /v1 (the gateway) through its all-async handler, the rest (the
management and agent APIs, later the console) through Django's usual one."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.settings")
django_application = get_asgi_application()

from appliance.gateway.asgi import GatewayHandler  # noqa: E402 - needs the apps loaded

gateway_application = GatewayHandler()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope.get("path", "")
    if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
        await gateway_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
