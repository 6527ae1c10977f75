"""One pooled HTTP client per process (per event loop) for talking to engines.

aiohttp rather than httpx here: on the gateway's hot path its C-accelerated client costs a
fraction of httpx's per request (measured with py-spy under `make bench-gateway`).
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from django.conf import settings

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
READ_BUFFER = 2**20  # an SSE line (one chunk) may be long; aiohttp's default is 64 KiB

# Failures before the engine answered (refused, reset, closed): nothing reached the client, so
# another engine may try. Catch aiohttp.ServerTimeoutError (a read timeout) before this.
NOT_ANSWERED = (aiohttp.ClientConnectionError,)


def engine_session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2048, limit_per_host=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.APPLIANCE_GATEWAY_CONNECT_TIMEOUT_SECONDS,
                sock_read=settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS,
            ),
            trust_env=False,  # engines are on the private network: never via a proxy
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
        )
        _sessions[loop] = session
    return session


def has_session() -> bool:
    """Whether this event loop has a client already (one made for a job is the job's to close)."""
    session = _sessions.get(asyncio.get_running_loop())
    return session is not None and not session.closed


async def close_session() -> None:
    """Close this event loop's client (at shutdown, and between test servers)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
