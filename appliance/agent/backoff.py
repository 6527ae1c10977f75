"""Restart backoff for engines that crash: wait longer after each failure, forgive after a while.

An engine that dies on start (bad weights, out of memory) must not be restarted in a tight loop,
but one that ran healthily for ``reset_after`` seconds starts again from the short delay. The
clock is injectable (every method takes ``now``), and there is no jitter, so the schedule is
deterministic and testable. This module must not import Django.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """Delays ``base · factor^(failures-1)``, capped at ``maximum``, reset by a healthy streak."""

    def __init__(
        self,
        *,
        base: float = 2.0,
        factor: float = 2.0,
        maximum: float = 300.0,
        reset_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if base <= 0 or factor < 1 or maximum < base or reset_after <= 0:
            raise ValueError("need base > 0, factor >= 1, maximum >= base, reset_after > 0")
        self.base = base
        self.factor = factor
        self.maximum = maximum
        self.reset_after = reset_after
        self.clock = clock
        self._failures = 0
        self._delay = 0.0
        self._next_start_at: float | None = None
        self._healthy_since: float | None = None

    @property
    def failures(self) -> int:
        """Failures since the last reset."""
        return self._failures

    @property
    def next_start_at(self) -> float | None:
        """The earliest time (on ``clock``) a start is allowed; None: any time."""
        return self._next_start_at

    def record_failure(self, now: float | None = None) -> float:
        """Count a failure; returns the delay before the next start is allowed."""
        now = self._now(now)
        self._reset_if_healthy_long_enough(now)
        self._healthy_since = None
        self._failures += 1
        # Grown step by step rather than base * factor ** n, which overflows after many failures.
        grown = self.base if self._failures == 1 else self._delay * self.factor
        self._delay = min(self.maximum, grown)
        self._next_start_at = now + self._delay
        return self._delay

    def record_healthy(self, now: float | None = None) -> None:
        """The engine is healthy now; a streak of ``reset_after`` seconds forgets all failures."""
        now = self._now(now)
        if self._healthy_since is None:
            self._healthy_since = now
        self._reset_if_healthy_long_enough(now)

    def ready(self, now: float | None = None) -> bool:
        """Whether a start is allowed now."""
        return self._next_start_at is None or self._now(now) >= self._next_start_at

    def reset(self) -> None:
        """Forget all failures (e.g. after an operator changed the deployment)."""
        self._failures = 0
        self._delay = 0.0
        self._next_start_at = None
        self._healthy_since = None

    def _reset_if_healthy_long_enough(self, now: float) -> None:
        healthy_since = self._healthy_since
        if healthy_since is not None and now - healthy_since >= self.reset_after:
            self.reset()
            self._healthy_since = healthy_since

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now
