"""An application's limits: requests and tokens per minute, concurrent requests, monthly tokens.

With ``REDIS_URL`` set, the counters live in Redis and every check-and-count is one Lua script,
so all gateway processes share them atomically. Without Redis (the embedded mode, one process)
they live in this process. If Redis stops answering, each process falls back to its own
counters (limits still hold per process, so a fleet of N processes may let through up to N times
a limit) and tries Redis again a few seconds later; requests keep flowing either way.

Tokens are counted when a request ends (its real usage); a request is refused when the minute's
or the month's tokens are already spent. Windows are fixed UTC minutes and calendar months.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings

from appliance.core import redis as shared_redis
from appliance.gateway.principals import Limits

MONTH_KEY_TTL = 40 * 86400


@dataclass(frozen=True)
class Refusal:
    code: str  # requests_per_minute, tokens_per_minute, budget_exceeded, concurrent_requests
    message: str
    retry_after: int


def month_of(now: float) -> tuple[str, int]:
    """The month's label and the seconds until the next one starts (UTC)."""
    moment = datetime.fromtimestamp(now, UTC)
    following = (
        moment.replace(year=moment.year + 1, month=1)
        if moment.month == 12
        else moment.replace(month=moment.month + 1)
    )
    start = following.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.strftime("%Y%m"), math.ceil(start.timestamp() - now)


def _refusal(code: str, retry_after: int) -> Refusal:
    messages = {
        "requests_per_minute": "The application's requests-per-minute limit is reached.",
        "tokens_per_minute": "The application's tokens-per-minute limit is reached.",
        "budget_exceeded": "The application's monthly token budget is spent.",
        "concurrent_requests": "The application has too many requests in progress.",
    }
    return Refusal(code, messages[code], retry_after)


# KEYS: requests, tokens, concurrent, budget. ARGV: now, rpm, tpm, concurrent, budget, request id,
# seconds left in the minute, stale-after seconds, seconds left in the month.
# Returns {code, retry_after}: "ok", "seed" (the month's counter must be loaded) or a refusal.
ACQUIRE = """
local now = tonumber(ARGV[1])
local rpm, tpm, conc, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local minute_left, stale, month_left = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - stale)
  if redis.call('ZCARD', KEYS[3]) >= conc then return {'concurrent_requests', 1} end
end
if budget > 0 then
  local used = redis.call('GET', KEYS[4])
  if not used then return {'seed', 0} end
  if tonumber(used) >= budget then return {'budget_exceeded', month_left} end
end
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then
  return {'tokens_per_minute', minute_left}
end
if rpm > 0 then
  if tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then
    return {'requests_per_minute', minute_left}
  end
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
end
if conc > 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('EXPIRE', KEYS[3], stale)
end
return {'ok', 0}
"""

# KEYS: tokens, concurrent, budget. ARGV: request id, tokens.
RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  redis.call('INCRBY', KEYS[1], tokens)
  redis.call('EXPIRE', KEYS[1], 120)
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], tokens) end
end
return 1
"""


def _keys(application_id: int, now: float) -> tuple[str, str, str, str]:
    minute = int(now // 60)
    month, _ = month_of(now)
    base = f"appliance:limits:{application_id}"
    return f"{base}:req:{minute}", f"{base}:tok:{minute}", f"{base}:conc", f"{base}:month:{month}"


SeedBudget = Callable[[int, float], Awaitable[int]]  # (application id, now) → tokens this month


@dataclass
class Admission:
    """One request let in (or not), and where it was counted, so it is given back there."""

    application_id: int
    limits: Limits
    slot: str
    refusal: Refusal | None = None
    backend: str | None = None  # "redis", "local", or None when no limit applies


class LocalCounters:
    """The same rules in this process's memory."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.running: dict[str, dict[str, float]] = defaultdict(dict)

    def acquire(
        self,
        keys: tuple[str, str, str, str],
        limits: Limits,
        request_id: str,
        now: float,
        seeded: int | None,
    ) -> Refusal | None:
        requests, tokens, concurrent, month = keys
        minute_left = math.ceil(60 - now % 60)
        if limits.max_concurrent_requests:
            running = self.running[concurrent]
            for rid, started in list(running.items()):
                if started < now - _stale_after():
                    del running[rid]
            if len(running) >= limits.max_concurrent_requests:
                return _refusal("concurrent_requests", 1)
        if limits.monthly_token_budget:
            if month not in self.counts and seeded is not None:
                self.counts[month] = seeded
            if self.counts[month] >= limits.monthly_token_budget:
                return _refusal("budget_exceeded", month_of(now)[1])
        if limits.tokens_per_minute and self.counts[tokens] >= limits.tokens_per_minute:
            return _refusal("tokens_per_minute", minute_left)
        if limits.requests_per_minute:
            if self.counts[requests] >= limits.requests_per_minute:
                return _refusal("requests_per_minute", minute_left)
            self.counts[requests] += 1
        if limits.max_concurrent_requests:
            self.running[concurrent][request_id] = now
        self._forget_old(now)
        return None

    def release(self, keys: tuple[str, str, str, str], request_id: str, used: int) -> None:
        _, tokens, concurrent, month = keys
        self.running[concurrent].pop(request_id, None)
        if used > 0:
            self.counts[tokens] += used
            if month in self.counts:
                self.counts[month] += used

    def _forget_old(self, now: float) -> None:
        if len(self.counts) < 10_000:
            return
        minute = f":{int(now // 60)}"
        for name in [k for k in self.counts if ":month:" not in k and not k.endswith(minute)]:
            del self.counts[name]


def _stale_after() -> int:
    """A request older than its timeout is no longer counted as running (its process died)."""
    return settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS + 30


class Limiter:
    """Check-and-count before a request, count its tokens after."""

    def __init__(self, seed_budget: SeedBudget) -> None:
        self.local = LocalCounters()
        self.seed_budget = seed_budget

    async def acquire(self, application_id: int, limits: Limits, slot: str) -> Admission:
        """Check and count one request; ``slot`` is a server-made id for its concurrency place."""
        admission = Admission(application_id, limits, slot)
        if not any(
            (
                limits.requests_per_minute,
                limits.tokens_per_minute,
                limits.monthly_token_budget,
                limits.max_concurrent_requests,
            )
        ):
            return admission
        now = time.time()
        keys = _keys(application_id, now)
        if shared_redis.available():
            try:
                admission.refusal = await self._acquire_redis(keys, admission, now)
                admission.backend = "redis"
                return admission
            except redis.RedisError as exc:
                shared_redis.mark_down(exc)
        seeded = None
        if limits.monthly_token_budget and keys[3] not in self.local.counts:
            seeded = await self.seed_budget(application_id, now)
        admission.refusal = self.local.acquire(keys, limits, slot, now, seeded)
        admission.backend = "local"
        return admission

    async def _acquire_redis(
        self, keys: tuple[str, str, str, str], admission: Admission, now: float
    ) -> Refusal | None:
        limits = admission.limits
        args: list[Any] = [
            now,
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            limits.max_concurrent_requests or 0,
            limits.monthly_token_budget or 0,
            admission.slot,
            math.ceil(60 - now % 60),
            _stale_after(),
            month_of(now)[1],
        ]
        acquire = shared_redis.script(ACQUIRE)
        for _ in range(2):
            code, retry_after = await acquire(keys=list(keys), args=args)
            code = code.decode() if isinstance(code, bytes) else code
            if code == "ok":
                return None
            if code != "seed":
                return _refusal(code, int(retry_after))
            used = await self.seed_budget(admission.application_id, now)
            await shared_redis.async_client().set(keys[3], used, nx=True, ex=MONTH_KEY_TTL)
        return None

    async def release(self, admission: Admission, tokens: int) -> None:
        """Give back the concurrency place and count the tokens used, where the request was
        admitted (a Redis admission is released in Redis even if Redis failed meanwhile)."""
        if admission.backend is None or admission.refusal is not None:
            return
        keys = _keys(admission.application_id, time.time())
        if admission.backend == "redis":
            try:
                release = shared_redis.script(RELEASE)
                await release(keys=[keys[1], keys[2], keys[3]], args=[admission.slot, tokens])
            except redis.RedisError as exc:
                shared_redis.mark_down(exc)  # the place frees itself when it goes stale
            return
        self.local.release(keys, admission.slot, tokens)
