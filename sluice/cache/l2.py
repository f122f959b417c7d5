"""L2: the shared store behind a circuit breaker, failing open.

Keeps the guide's name :class:`L2RedisCache`, though it runs over any :class:`~sluice.store.Store`
(Redis, or diskcache on one machine). Every backend error is counted and turned into a miss or a
skipped write; the breaker, told each call's latency, stops calling the backend after errors in a
row or a sustained run of extreme latencies, until it recovers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sluice.cache.breaker import CircuitBreaker
from sluice.errors import (
    BackendTimeout,
    BackendUnavailable,
    CodecError,
    InvalidInput,
    SluiceError,
)
from sluice.store import BufferedCounters, Store, StoreLock

log = logging.getLogger(__name__)
T = TypeVar("T")
STATS_KEY = "ai:stats"


class L2RedisCache:
    """Fail-open access to cache entries, generations, stats and fill locks in the store."""

    def __init__(
        self, store: Store, breaker: CircuitBreaker, stats: BufferedCounters | None = None
    ):
        self.store = store
        self.breaker = breaker
        self.stats = stats
        # Monotonic time of L2's last answer; until its first, of this tier's creation: a process
        # that never reached the store cannot tell a live holder's lock is there, so it waits as
        # long as one that lost it (a worker started just before a Redis restart called the
        # provider for requests whose holders were alive, and could not store the answers).
        self._answered_at = time.monotonic()
        self._resumed_at: float | None = None  # ... and of its first answer after a failure
        self._failing = False

    def _guarded(self, content_type: str, default: T, operation: Callable[[], T]) -> T:
        breaker = self.breaker
        if not breaker.allow():
            return default
        started = time.perf_counter()
        try:
            result = operation()
        except (CodecError, InvalidInput):
            # The backend answered (with a value we refuse): not an outage. Recording the success
            # also ends a half-open trial, which would otherwise stay "running" forever.
            self._answered(started)
            raise
        except SluiceError as exc:
            self._failed(content_type, exc, time.perf_counter() - started)
            return default
        self._answered(started)
        return result

    def _answered(self, started: float) -> None:
        self.breaker.record_success(time.perf_counter() - started)
        self._answered_at = now = time.monotonic()
        if self._failing:
            self._failing = False
            self._resumed_at = now

    def _failed(self, content_type: str, exc: SluiceError, elapsed: float) -> None:
        self._failing = True
        if isinstance(exc, BackendTimeout):
            self.breaker.record_timeout(elapsed)
        else:
            self.breaker.record_failure()
        if self.stats:
            self.stats.incr(content_type, "l2_errors")
        log.warning("L2 cache unavailable (%s); continuing without it", exc)

    def get_encoded(self, content_type: str, key: str) -> bytes | None:
        """The stored bytes, or None on a miss, an error, or a key of another kind (counted)."""
        # _guarded, inlined: this is every L2 hit's path.
        breaker = self.breaker
        if not breaker.allow():
            return None
        started = time.perf_counter()
        try:
            data = self.store.get_encoded(key)
        except (CodecError, InvalidInput) as exc:
            self._answered(started)
            self._corrupt(content_type, key, exc)
            return None
        except SluiceError as exc:
            self._failed(content_type, exc, time.perf_counter() - started)
            return None
        self._answered(started)
        return data

    def get_many_encoded(self, content_type: str, keys: list[str]) -> dict[str, bytes]:
        try:
            return self._guarded(content_type, {}, lambda: self.store.get_many_encoded(keys))
        except (CodecError, InvalidInput):
            # One key of another kind spoils the batch read; fall back to reading each alone.
            found = {key: self.get_encoded(content_type, key) for key in keys}
            return {key: data for key, data in found.items() if data is not None}

    def get_many(self, content_type: str, keys: list[str]) -> dict[str, Any]:
        """Decoded values of the keys present; undecodable ones are skipped (counted)."""
        found = {}
        for key, data in self.get_many_encoded(content_type, keys).items():
            try:
                found[key] = self.store.codec.decode(data)
            except CodecError as exc:
                self._corrupt(content_type, key, exc)
        return found

    def set_encoded(
        self, content_type: str, key: str, data: bytes, ttl: float, *, insist: bool = False
    ) -> bool:
        """Store bytes; False when they were not written (an error, or the circuit open).

        ``insist`` tries the store even with the circuit open, as its probe: a fill holder's
        write that waiters in other processes are polling for, retried at the holder's own pace.
        Left to the breaker, it would wait out ``reset_after`` after the store came back.
        """
        # _guarded, inlined: this is every write's path.
        breaker = self.breaker
        if not (insist or breaker.allow()):
            return False
        started = time.perf_counter()
        try:
            self.store.set_encoded(key, data, ttl)
        except SluiceError as exc:
            self._failed(content_type, exc, time.perf_counter() - started)
            return False
        self._answered(started)
        return True

    def set(self, content_type: str, key: str, value: Any, ttl: float) -> bool:
        """Store a value; False when it was not written (an error, or the circuit open)."""
        return self._guarded(content_type, False, lambda: self.store.set(key, value, ttl) is None)

    def _corrupt(self, content_type: str, key: str, exc: Exception) -> None:
        # Garbage, a pickle, or a foreign value of another kind (a list, a hash) under the key.
        if self.stats:
            self.stats.incr(content_type, "corrupt")
        log.warning("ignoring undecodable L2 value at %s: %s", key, exc)

    def delete(self, content_type: str, keys: Iterable[str]) -> int:
        keys = list(keys)
        return self._guarded(content_type, 0, lambda: self.store.delete(*keys)) if keys else 0

    def counters(self, keys: list[str]) -> tuple[list[int] | None, bool]:
        """``(values, answered)``: several counters at once, or None when L2 did not answer
        (``answered`` False: an error or the circuit open) or one is malformed (counted)."""
        try:
            values = self._guarded(
                "generation", None, lambda: [self.store.get_counter(key) for key in keys]
            )
        except (CodecError, InvalidInput) as exc:
            if self.stats:
                self.stats.incr("generation", "corrupt")
            log.warning("ignoring a malformed AI cache counter: %s", exc)
            return None, True
        return values, values is not None

    def repair_counters(self, keys: list[str], fresh: int) -> None:
        """Replace each malformed counter among ``keys`` by ``fresh`` (a value none has held)."""

        def repair() -> None:
            for key in keys:
                try:
                    self.store.get_counter(key)
                except (CodecError, InvalidInput):
                    log.warning("replacing the malformed AI cache counter %s", key)
                    self.store.delete(key)
                    self.store.incr(key, fresh)

        self._guarded("generation", None, repair)

    def bump(self, key: str) -> int | None:
        return self._guarded("generation", None, lambda: self.store.incr(key))

    def publish(self, channel: str, message: Any) -> None:
        if self.store.supports_pubsub:
            self._guarded("invalidation", 0, lambda: self.store.publish(channel, message))

    def try_lock(self, name: str, lease: float) -> tuple[StoreLock | None, bool]:
        """``(lock, answered)``: a held fill lock (renewed in the background) or None.

        ``answered`` tells a lock someone else holds (True) from a store that did not answer
        (False: an error or the circuit open), so a waiter knows whether the holder is alive.
        """
        lock = self.store.lock(name, lease=lease)
        acquired = self._guarded(
            "lock", None, lambda: lock.acquire(blocking=False, auto_renew=True)
        )
        return (lock if acquired else None), acquired is not None

    def silent_for(self) -> float:
        """Seconds since L2 last answered this process (or, until it first has, since this tier
        was created)."""
        return time.monotonic() - self._answered_at

    def resumed_for(self) -> float | None:
        """Seconds since L2 answered again after failing; None if it never failed this process."""
        resumed = self._resumed_at
        return None if resumed is None else time.monotonic() - resumed

    def usable(self) -> bool:
        """Whether L2 calls are currently going through (the breaker is not open)."""
        return self.breaker.state != "open"

    # Stats: shared totals in one hash of the store.

    def add_stats(self, batch: dict[str, int]) -> None:
        """Add a batch to the shared totals; raises when it could not (the caller keeps it)."""

        def add() -> bool:
            for field, amount in batch.items():
                self.store.hincr(STATS_KEY, field, amount)
            return True

        # Through the breaker, so a dead L2 costs the stats flush no timeout once it is open.
        if not self._guarded("stats", False, add):
            raise BackendUnavailable("could not add cache stats to the shared store")

    def read_stats(self) -> dict[str, int]:
        return self.store.hgetall_counters(STATS_KEY)
