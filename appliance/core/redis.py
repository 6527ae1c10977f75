"""Redis clients for the limits and the cache generation, when ``REDIS_URL`` is set.

Short timeouts: Redis holds counters, not truth, so a slow or dead Redis must not stall requests;
callers fall back to per-process state (see appliance.gateway.limits).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from typing import Any

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 5.0
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)
_scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_down_until = 0.0


def configured() -> bool:
    return bool(settings.REDIS_URL)


def available() -> bool:
    """Configured, and not failed in the last RETRY_SECONDS (so a dead Redis costs one timeout
    every few seconds, not one per request)."""
    return configured() and time.monotonic() >= _down_until


def mark_down(exc: Exception) -> None:
    global _down_until
    if time.monotonic() >= _down_until:
        logger.warning(
            "Redis unreachable (%s); using per-process state for %.0f s",
            type(exc).__name__,
            RETRY_SECONDS,
        )
    _down_until = time.monotonic() + RETRY_SECONDS


@functools.cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )


def async_client() -> redis.asyncio.Redis:
    """One pooled client per event loop (a pool cannot be shared between loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        _async_clients[loop] = client
    return client


def script(source: str) -> Any:
    """A Lua script registered once per event loop's client (then run by its SHA: EVALSHA)."""
    loop = asyncio.get_running_loop()
    scripts = _scripts.setdefault(loop, {})
    if source not in scripts:
        scripts[source] = async_client().register_script(source)
    return scripts[source]


def reset() -> None:
    """Forget clients and failures (after REDIS_URL changes, e.g. between tests)."""
    global _down_until
    sync_client.cache_clear()
    _async_clients.clear()
    _scripts.clear()
    _down_until = 0.0
