"""Cluster-wide counters: local increments, added to shared totals in the store.

Incrementing the store on every event would put a network round trip on hot paths (an L1 cache hit,
a task submission), so each process buffers its increments and adds them to one hash in the store
at most once per interval. Counting never does I/O itself (so it never blocks an event loop).
Totals are the shared hash plus this process's unflushed increments; a flush that fails keeps its
increments for the next one, so no count is lost while the store is down.

Every buffer of a process is flushed by one daemon thread when its interval is due (so an idle
worker's last counts still arrive) and at interpreter exit; Celery pool children, which leave
through ``os._exit``, call :func:`flush_all` from ``worker_process_shutdown``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.store.base import Store

#: How often the flusher thread looks for buffers whose interval is due.
_TICK = 0.5
_live: weakref.WeakSet[BufferedCounters] = weakref.WeakSet()
_registry_lock = threading.Lock()
_flusher_pid: int | None = None


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
        _register(self)

    @classmethod
    def in_hash(
        cls, store: Store | Callable[[], Store], key: str, interval: float = 1.0
    ) -> BufferedCounters:
        """Counters whose shared totals are the fields of hash ``key`` in ``store``.

        ``store`` may be a callable returning the store, so the buffer follows a process's
        current store (e.g. :func:`sluice.store.get_store`).
        """
        current = store if callable(store) else (lambda: store)

        def flush(batch: dict[str, int]) -> None:
            target = current()
            for field, amount in batch.items():
                target.hincr(key, field, amount)

        return cls(flush, lambda: current().hgetall_counters(key), interval)

    def incr(self, scope: str, event: str, amount: int = 1) -> None:
        """Count locally; never touches the store (the flusher thread adds the counts)."""
        with self._lock:
            self._pending[f"{scope}:{event}"] += amount

    def add_two(self, field: str, amount: int, other: str, other_amount: int) -> None:
        """Add to two ``"scope:event"`` fields under one lock (hot paths: every cache hit and
        miss counts two), without the tuples and loop a general form would cost."""
        with self._lock:
            pending = self._pending
            pending[field] += amount
            pending[other] += other_amount

    def add(self, *increments: tuple[str, int]) -> None:
        """Add ``("scope:event", amount)`` pairs under one lock (a task's run counts three)."""
        with self._lock:
            pending = self._pending
            for field, amount in increments:
                pending[field] += amount

    def flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= self.interval:
            self.flush()

    def flush(self) -> bool:
        """Add the buffered increments to the shared totals; False (and kept) if that fails."""
        with self._lock:
            # Not ``+Counter``: that drops negative deltas (a running count going down).
            batch = {field: amount for field, amount in self._pending.items() if amount}
            self._pending = Counter()
            self._flushed_at = time.monotonic()
        if not batch:
            return True
        try:
            self._flush(batch)
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


def flush_all() -> None:
    """Flush every buffer of this process now (exit hooks, worker shutdown)."""
    for buffer in list(_live):
        buffer.flush()


def _register(buffer: BufferedCounters) -> None:
    global _flusher_pid
    with _registry_lock:
        _live.add(buffer)
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_due, name="sluice-counters-flush", daemon=True).start()


def _flush_due() -> None:
    pid = os.getpid()
    while _flusher_pid == pid:
        time.sleep(_TICK)
        for buffer in list(_live):
            buffer.flush_if_due()


def _after_fork_in_child() -> None:
    # Counts buffered before the fork are the parent's to flush; the parent's flusher thread does
    # not exist here, so the child starts its own.
    global _flusher_pid
    for buffer in list(_live):
        buffer._pending.clear()
    _flusher_pid = None
    if _live:
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_due, name="sluice-counters-flush", daemon=True).start()


atexit.register(flush_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
