"""A circuit breaker: stop paying a failing backend's timeout on every call.

It opens on two kinds of evidence, never on one slow moment:

* errors: ``failures`` in a row (a refused or reset connection, an error reply);
* latency far beyond the healthy tail: calls (timeouts included) slower than ``slow_factor`` times
  the p99 of recent healthy calls (and at least ``slow_floor`` seconds), ``slow_calls`` of them in a
  row without a healthy call between, the run lasting at least ``slow_window`` seconds.

A busy machine makes single calls slow (a process not scheduled, a store sharing the CPU); a broken
backend makes every call fail or crawl for as long as it is broken. Opening on the first would skip
healthy writes and reads, turning a stall into lost entries and provider calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque

#: Healthy latencies kept to estimate the tail, and how often the estimate is recomputed.
_WINDOW = 512
_RECOMPUTE_EVERY = 64


class CircuitBreaker:
    """Closed until errors or sustained extreme latency; then open for ``reset_after`` seconds.

    After that one trial call is let through (half-open): success closes the circuit, failure opens
    it again for another period.
    """

    def __init__(
        self,
        failures: int = 3,
        reset_after: float = 5.0,
        *,
        slow_factor: float = 20.0,
        slow_floor: float = 0.25,
        slow_calls: int = 5,
        slow_window: float = 2.0,
    ) -> None:
        self.failures = failures
        self.reset_after = reset_after
        self.slow_factor = slow_factor
        self.slow_floor = slow_floor
        self.slow_calls = slow_calls
        self.slow_window = slow_window
        self._consecutive = 0
        self._slow_run = 0
        self._slow_since: float | None = None
        self._healthy: deque[float] = deque(maxlen=_WINDOW)
        self._since_recompute = 0
        self._threshold = slow_floor
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._trial_due() else "open"

    @property
    def slow_threshold(self) -> float:
        """Seconds beyond which a call counts as far beyond the healthy tail."""
        return self._threshold

    def allow(self) -> bool:
        """Whether a call may go to the backend now."""
        if self._opened_at is None:  # closed: one attribute read, no lock on the hot path
            return True
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_due() and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self, latency: float = 0.0) -> None:
        """A call answered after ``latency`` seconds."""
        healthy = latency <= self._threshold
        if (
            healthy
            and self._opened_at is None
            and not self._consecutive
            and not self._slow_run
            and not self._trial_running
        ):
            # The hot path, lock-free: deque appends are atomic, and a lost count only delays
            # the next recompute of the threshold.
            self._healthy.append(latency)
            self._since_recompute += 1
            if self._since_recompute >= _RECOMPUTE_EVERY:
                self._recompute()
            return
        with self._lock:
            self._consecutive = 0
            if not healthy:
                self._slow(latency)
                return
            self._closed_by_health()
            self._healthy.append(latency)

    def _recompute(self) -> None:
        self._since_recompute = 0
        ordered = sorted(self._healthy)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        self._threshold = max(self.slow_floor, self.slow_factor * p99)

    def record_timeout(self, latency: float) -> None:
        """A call gave up after ``latency`` seconds without an answer: slow, not (yet) broken."""
        with self._lock:
            self._slow(latency)

    def record_failure(self) -> None:
        """A call failed: the backend refused, reset or answered with an error."""
        with self._lock:
            self._consecutive += 1
            self._trial_running = False
            if self._opened_at is not None or self._consecutive >= self.failures:
                self._opened_at = time.monotonic()

    def _slow(self, latency: float) -> None:
        now = time.monotonic()
        self._trial_running = False
        self._slow_run += 1
        if self._slow_since is None:
            self._slow_since = now - latency
        sustained = self._slow_run >= self.slow_calls and now - self._slow_since >= self.slow_window
        if self._opened_at is not None or sustained:
            self._opened_at = now

    def _closed_by_health(self) -> None:
        self._slow_run = 0
        self._slow_since = None
        self._opened_at = None
        self._trial_running = False

    def _trial_due(self) -> bool:
        return (
            self._opened_at is not None and time.monotonic() - self._opened_at >= self.reset_after
        )
