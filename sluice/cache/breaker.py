"""A circuit breaker: stop paying a failing backend's timeout on every call."""

from __future__ import annotations

import threading
import time


class CircuitBreaker:
    """Closed until ``failures`` errors in a row; then open for ``reset_after`` seconds.

    After that one trial call is let through (half-open): success closes the circuit, failure opens
    it again for another period.
    """

    def __init__(self, failures: int = 3, reset_after: float = 5.0) -> None:
        self.failures = failures
        self.reset_after = reset_after
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._trial_due() else "open"

    def allow(self) -> bool:
        """Whether a call may go to the backend now."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_due() and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            self._trial_running = False
            if self._opened_at is not None or self._consecutive >= self.failures:
                self._opened_at = time.monotonic()

    def _trial_due(self) -> bool:
        return (
            self._opened_at is not None and time.monotonic() - self._opened_at >= self.reset_after
        )
