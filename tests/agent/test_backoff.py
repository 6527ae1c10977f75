"""Engine restart backoff: exponential growth, a cap, and forgiveness after a healthy streak."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.agent.backoff import Backoff


def test_a_fresh_backoff_allows_a_start() -> None:
    backoff = Backoff()

    assert backoff.ready(0.0)
    assert backoff.failures == 0
    assert backoff.next_start_at is None


def test_delays_double_from_the_base() -> None:
    backoff = Backoff(base=2, factor=2)

    delays = [backoff.record_failure(100.0) for _ in range(5)]

    assert delays == [2, 4, 8, 16, 32]
    assert backoff.failures == 5


def test_delays_are_capped_at_the_maximum() -> None:
    backoff = Backoff(base=2, factor=2, maximum=300)

    delays = [backoff.record_failure(0.0) for _ in range(2000)]

    assert delays[7:10] == [256, 300, 300]
    assert delays[-1] == 300


def test_a_start_waits_until_the_delay_has_passed() -> None:
    backoff = Backoff(base=5)

    backoff.record_failure(1000.0)

    assert backoff.next_start_at == 1005.0
    assert not backoff.ready(1004.9)
    assert backoff.ready(1005.0)


def test_a_healthy_streak_resets_the_failures() -> None:
    backoff = Backoff(reset_after=600)
    for _ in range(4):
        backoff.record_failure(0.0)

    backoff.record_healthy(100.0)
    backoff.record_healthy(699.0)
    assert backoff.failures == 4
    backoff.record_healthy(700.0)

    assert backoff.failures == 0
    assert backoff.ready(700.0)
    assert backoff.record_failure(800.0) == 2


def test_a_failure_breaks_the_healthy_streak() -> None:
    backoff = Backoff(reset_after=600)
    backoff.record_failure(0.0)
    backoff.record_healthy(10.0)
    backoff.record_failure(500.0)  # only 490 s healthy

    backoff.record_healthy(510.0)
    backoff.record_healthy(1000.0)  # 490 s into a new streak

    assert backoff.failures == 2
    assert backoff.record_failure(1001.0) == 8


def test_a_long_healthy_run_counts_even_without_a_check_at_the_end() -> None:
    backoff = Backoff(reset_after=600)
    backoff.record_failure(0.0)
    backoff.record_failure(0.0)
    backoff.record_healthy(10.0)

    assert backoff.record_failure(1000.0) == 2
    assert backoff.failures == 1


def test_the_injected_clock_is_used_when_no_time_is_given() -> None:
    now = [50.0]
    backoff = Backoff(base=3, clock=lambda: now[0])

    assert backoff.record_failure() == 3
    assert not backoff.ready()
    now[0] = 53.0
    assert backoff.ready()


def test_reset_forgets_everything() -> None:
    backoff = Backoff()
    backoff.record_failure(0.0)

    backoff.reset()

    assert backoff.failures == 0
    assert backoff.ready(0.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"factor": 0.5}, {"base": 10, "maximum": 5}, {"reset_after": 0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="need"):
        Backoff(**kwargs)
