"""Counting failures per key in the shared cache (Redis in production, files in embedded mode):
the mechanism behind sign-in and enrollment throttling."""

from __future__ import annotations

import time

from django.core.cache import cache


def retry_after(key: str, limit: int) -> int:
    """Seconds until ``key`` may try again: 0 while it has fewer than ``limit`` failures."""
    entry = cache.get(key)
    now = time.time()
    if entry and entry["count"] >= limit and entry["until"] > now:
        return int(entry["until"] - now) + 1
    return 0


def count_failure(key: str, window: int) -> None:
    """Count one failure; the window restarts at each failure."""
    entry = cache.get(key) or {"count": 0}
    cache.set(key, {"count": entry["count"] + 1, "until": time.time() + window}, window)
