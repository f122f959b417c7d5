"""The L2 circuit breaker opens on errors and on sustained extreme latency, never on a slow moment.

Driven by a fake clock, so every case is exact. Under CPU contention the old breaker opened on three
timeouts in a row and skipped every L2 write for its reset period: the cause of lost writes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.cache import CircuitBreaker
from sluice.cache import breaker as breaker_module


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(breaker_module.time, "monotonic", fake)
    return fake


def _healthy(breaker: CircuitBreaker, clock: Clock, n: int, latency: float = 0.001) -> None:
    for _ in range(n):
        clock.now += latency
        breaker.record_success(latency)


def test_errors_in_a_row_open_it_and_a_healthy_trial_closes_it(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=3, reset_after=5.0)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5.0
    assert breaker.state == "half-open" and breaker.allow() and not breaker.allow()
    breaker.record_success(0.001)
    assert breaker.state == "closed"


def test_a_slow_trial_keeps_it_open(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, reset_after=1.0)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_timeout(0.5)
    assert breaker.state == "open"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=4),  # slow or timed-out calls in a row
            st.sampled_from(["slow", "timeout"]),
            st.floats(min_value=0.3, max_value=3.0),  # each one's latency
            st.integers(min_value=1, max_value=20),  # healthy calls after them
        ),
        max_size=12,
    )
)
def test_slow_moments_separated_by_healthy_calls_never_open_it(runs: list[Any]) -> None:
    """Up to slow_calls - 1 slow calls at a time, however slow, then health: always closed."""
    clock = Clock()
    original = breaker_module.time.monotonic
    breaker_module.time.monotonic = clock  # type: ignore[assignment]
    try:
        breaker = CircuitBreaker(failures=3, slow_calls=5, slow_window=2.0)
        _healthy(breaker, clock, 100)
        for count, kind, latency, healthy in runs:
            for _ in range(count):
                clock.now += latency
                if kind == "slow":
                    breaker.record_success(latency)
                else:
                    breaker.record_timeout(latency)
                assert breaker.allow()
            _healthy(breaker, clock, healthy)
            assert breaker.state == "closed"
    finally:
        breaker_module.time.monotonic = original  # type: ignore[assignment]


def test_many_concurrent_slow_calls_of_one_stall_do_not_open_it(clock: Clock) -> None:
    """A stall delays every thread's call at once: many strikes, but not sustained."""
    breaker = CircuitBreaker(slow_calls=5, slow_window=2.0)
    _healthy(breaker, clock, 100)
    clock.now += 1.5
    for _ in range(16):
        breaker.record_timeout(1.5)
    assert breaker.state == "closed"
    _healthy(breaker, clock, 1)
    assert breaker.state == "closed"


def test_sustained_extreme_latency_opens_it(clock: Clock) -> None:
    breaker = CircuitBreaker(slow_calls=5, slow_window=2.0, slow_floor=0.25)
    _healthy(breaker, clock, 100)
    for _ in range(4):
        clock.now += 0.6
        breaker.record_timeout(0.6)
    assert breaker.state == "closed"  # four strikes over 2.4 s: not yet five
    clock.now += 0.6
    breaker.record_success(0.6)
    assert breaker.state == "open"


def test_the_threshold_follows_the_healthy_tail(clock: Clock) -> None:
    breaker = CircuitBreaker(slow_factor=20.0, slow_floor=0.01)
    _healthy(breaker, clock, 600, latency=0.002)
    assert breaker.slow_threshold == pytest.approx(0.04)
    # 30 ms is within 20x the healthy p99: not a strike, however many in a row.
    for _ in range(50):
        clock.now += 0.03
        breaker.record_success(0.03)
    assert breaker.state == "closed"
