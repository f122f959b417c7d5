"""L2: the shared store behind a circuit breaker, failing open.

Keeps the guide's name :class:`L2RedisCache`, though it runs over any :class:`~sluice.store.Store`
(Redis, or diskcache on one machine). Every backend error is counted and turned into a miss or a
skipped write; after a few in a row the breaker stops calling the backend until it recovers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sluice.cache.breaker import CircuitBreaker
from sluice.errors import BackendUnavailable, CodecError, InvalidInput, SluiceError
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

    def _guarded(self, content_type: str, default: T, operation: Callable[[], T]) -> T:
        if not self.breaker.allow():
            return default
        try:
            result = operation()
        except (CodecError, InvalidInput):
            # The backend answered (with a value we refuse): not an outage. Recording the success
            # also ends a half-open trial, which would otherwise stay "running" forever.
            self.breaker.record_success()
            raise
        except SluiceError as exc:
            self.breaker.record_failure()
            if self.stats:
                self.stats.incr(content_type, "l2_errors")
            log.warning("L2 cache unavailable (%s); continuing without it", exc)
            return default
        self.breaker.record_success()
        return result

    def get(self, content_type: str, key: str) -> Any | None:
        """The stored envelope, or None on a miss, an error, or a corrupt value (counted)."""
        try:
            return self._guarded(content_type, None, lambda: self.store.get(key))
        except (CodecError, InvalidInput) as exc:
            # Garbage, a pickle, or a foreign value of another kind (a list, a hash) under the key.
            if self.stats:
                self.stats.incr(content_type, "corrupt")
            log.warning("ignoring undecodable L2 value at %s: %s", key, exc)
            return None

    def get_many(self, content_type: str, keys: list[str]) -> dict[str, Any]:
        try:
            return self._guarded(content_type, {}, lambda: self.store.get_many(keys))
        except (CodecError, InvalidInput):
            # One corrupt value spoils the batch read; fall back to reading each key alone.
            found = {key: self.get(content_type, key) for key in keys}
            return {key: value for key, value in found.items() if value is not None}

    def set(self, content_type: str, key: str, envelope: Any, ttl: float) -> bool:
        return self._guarded(
            content_type, False, lambda: self.store.set(key, envelope, ttl) is None
        )

    def set_many(self, content_type: str, entries: dict[str, Any], ttl: float) -> bool:
        return self._guarded(content_type, False, lambda: self.store.set_many(entries, ttl) is None)

    def delete(self, content_type: str, keys: Iterable[str]) -> int:
        keys = list(keys)
        return self._guarded(content_type, 0, lambda: self.store.delete(*keys)) if keys else 0

    def counters(self, keys: list[str]) -> list[int] | None:
        """Several counters at once, or None when L2 is unavailable."""
        return self._guarded(
            "generation", None, lambda: [self.store.get_counter(key) for key in keys]
        )

    def bump(self, key: str) -> int | None:
        return self._guarded("generation", None, lambda: self.store.incr(key))

    def publish(self, channel: str, message: Any) -> None:
        if self.store.supports_pubsub:
            self._guarded("invalidation", 0, lambda: self.store.publish(channel, message))

    def try_lock(self, name: str, lease: float) -> StoreLock | None:
        """A held fill lock (renewed in the background), or None if it could not be taken.

        None also when L2 failed; callers that wait check :meth:`usable` and stop waiting then.
        """
        lock = self.store.lock(name, lease=lease)
        acquired = self._guarded(
            "lock", None, lambda: lock.acquire(blocking=False, auto_renew=True)
        )
        return lock if acquired else None

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
