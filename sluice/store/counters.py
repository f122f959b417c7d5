"""Cluster-wide counters: local increments, added to shared totals in the store.

Incrementing the store on every event would put a network round trip on hot paths (an L1 cache hit,
a task submission), so each process buffers its increments and adds them to one hash in the store
at most once per interval.
Totals are the shared hash plus this process's unflushed increments; a flush that fails keeps its
increments for the next one, so no count is lost while the store is down.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable


class BufferedCounters:
    """Per-process buffer of ``(scope, event)`` counts with periodic flushes.

    ``flush`` adds a batch of ``"scope:event" -> delta`` to the shared totals and raises on failure;
    ``read`` returns the shared totals (or raises).
    """

    def __init__(
        self,
        flush: Callable[[dict[str, int]], None],
        read: Callable[[], dict[str, int]],
        interval: float = 1.0,
    ) -> None:
        self._flush = flush
        self._read = read
        self.interval = interval
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def incr(self, scope: str, event: str, amount: int = 1) -> None:
        with self._lock:
            self._pending[f"{scope}:{event}"] += amount
        if time.monotonic() - self._flushed_at >= self.interval:
            self.flush()

    def flush(self) -> bool:
        """Add the buffered increments to the shared totals; False (and kept) if that fails."""
        with self._lock:
            batch, self._pending = +self._pending, Counter()
            self._flushed_at = time.monotonic()
        if not batch:
            return True
        try:
            self._flush(dict(batch))
            return True
        except Exception:
            with self._lock:
                self._pending.update(batch)
            return False

    def totals(self) -> tuple[Counter[str], bool]:
        """Cluster-wide counts by ``"scope:event"`` and whether the shared part could be read."""
        self.flush()
        shared_ok = True
        try:
            totals = Counter(self._read())
        except Exception:
            totals, shared_ok = Counter(), False
        with self._lock:
            totals.update(self._pending)
        return totals, shared_ok
