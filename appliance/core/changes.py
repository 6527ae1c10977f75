"""Telling gateway processes that keys, grants, limits or the registry changed, so cached copies
are dropped before the next request (a revoked key stops working at once, not after a cache
expiry)."""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from appliance.core import redis as shared_redis

logger = logging.getLogger(__name__)

GENERATION_KEY = "appliance:access:generation"
_local_generation = 0


def local_generation() -> int:
    """Changes made by this process (the only signal in embedded mode, which runs one)."""
    return _local_generation


def access_changed() -> None:
    """Bump the access generation once the current transaction commits."""
    transaction.on_commit(_bump)


def _bump() -> None:
    global _local_generation
    _local_generation += 1
    if shared_redis.configured():
        try:
            shared_redis.sync_client().incr(GENERATION_KEY)
        except redis.RedisError as exc:
            # Other processes fall back to their cache expiry (APPLIANCE_GATEWAY_CACHE_SECONDS).
            logger.warning("could not publish an access change to Redis: %s", type(exc).__name__)
