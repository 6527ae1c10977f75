"""How long each target has lately taken to answer, as this gateway process saw it: an
exponentially weighted mean, so a route can skip targets that would not fit a request's latency
budget without asking the database."""

from __future__ import annotations

WEIGHT = 0.2  # of the newest observation

_means: dict[str, float] = {}


def observe(target: str, milliseconds: float) -> None:
    mean = _means.get(target)
    _means[target] = milliseconds if mean is None else mean + WEIGHT * (milliseconds - mean)


def estimate(target: str) -> float | None:
    """None: never seen here, so assumed to fit."""
    return _means.get(target)


def forget() -> None:
    _means.clear()
