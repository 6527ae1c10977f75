"""One pooled HTTP client per process (per event loop) for talking to engines."""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def engine_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS,
                connect=settings.APPLIANCE_GATEWAY_CONNECT_TIMEOUT_SECONDS,
            ),
            limits=httpx.Limits(max_connections=2048, max_keepalive_connections=512),
            trust_env=False,  # engines are on the private network: never via a proxy
            follow_redirects=False,
        )
        _clients[loop] = client
    return client
