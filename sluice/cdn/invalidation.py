"""The durable, deduplicated invalidation queue in the shared store, and its flush.

Paths are validated when queued (a bad path is refused to the caller, never discovered by a beat
task hours later), deduplicated with a marker key per path, and kept in a store list so they
survive restarts and are shared by every process. A flush runs under a store lock (one flusher
at a time), parks the batch it took under an "in flight" key until the provider confirms, and
re-queues whatever was not purged, so a failure or a crash mid-flush loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.cdn.providers import PurgeFailed, PurgeProvider
from sluice.cdn.purgepaths import EVERYTHING, collapse, is_covered, validate_purge_path
from sluice.store import Store

log = logging.getLogger(__name__)

QUEUE_KEY = "cdn:invalidation:queue"
IN_FLIGHT_KEY = "cdn:invalidation:in-flight"
LOCK_NAME = "cdn:invalidation"
_MARK = "cdn:invalidation:queued:"
# A marker outliving its queue entry (after a manual wipe) only delays a re-queue this long.
_MARK_TTL = 24 * 3600.0
_DRAIN = 10_000


@dataclass
class FlushResult:
    """The outcome of :meth:`InvalidationQueue.flush`."""

    purged: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    calls: int = 0
    error: str | None = None
    retry_after: float | None = None
    skipped: bool = False  # another process was flushing


class InvalidationQueue:
    """Pending CDN invalidations in a :class:`~sluice.store.Store`.

    :param wildcard_threshold: more queued files than this in one directory purge as ``dir/*``.
    """

    def __init__(self, store: Store, wildcard_threshold: int = 50, batch: int = 1000) -> None:
        self.store = store
        self.wildcard_threshold = wildcard_threshold
        self.batch = batch

    def queue(self, paths: Iterable[str]) -> int:
        """Validate and queue ``paths``; return how many were new (not already pending).

        All paths are validated before any is queued, so a bad one queues nothing.
        """
        valid = list(dict.fromkeys(validate_purge_path(p) for p in paths))
        return len(self._push_new(valid))

    def invalidate_all(self) -> None:
        """Queue a purge of everything (``/*``)."""
        self.queue([EVERYTHING])

    def pending(self) -> list[str]:
        """The queued paths, oldest first, without removing them (includes a flush in flight)."""
        with self.store.lock(LOCK_NAME, lease=60, timeout=60):
            self._recover()
            items = self._pop_all()
            self.store.set(IN_FLIGHT_KEY, items)
            if items:
                self.store.push(QUEUE_KEY, *items)
            self.store.delete(IN_FLIGHT_KEY)
        return list(dict.fromkeys(items))

    def __len__(self) -> int:
        return self.store.length(QUEUE_KEY)

    def flush(self, provider: PurgeProvider) -> FlushResult:
        """Purge everything queued through ``provider``, batch by batch; re-queue on failure."""
        result = FlushResult()
        lock = self.store.lock(LOCK_NAME, lease=120)
        if not lock.acquire(blocking=False, auto_renew=True):
            result.skipped = True
            return result
        try:
            self._recover()
            # Paths queued before this flush began are covered by any purge it sends; one queued
            # meanwhile may have new content the earlier purge reached the edge before, so it is
            # purged again. Without this, a directory collapsed to "dir/*" was purged per batch.
            older = self.store.length(QUEUE_KEY)
            stale: list[str] = []  # what this flush purged, widened as the provider widens
            while not result.error:
                items = self.store.pop_many(QUEUE_KEY, self.batch)
                if not items:
                    break
                self.store.set(IN_FLIGHT_KEY, items)
                # Unmark before purging: a path queued again during the purge must queue anew,
                # because this purge may reach the edge before the new content is deployed.
                self.store.delete(*{_marker(p) for p in items})
                fresh = [p for p in items[:older] if not is_covered(p, stale)]
                done = len(result.purged)
                self._flush_batch(provider, fresh + items[older:], result)
                stale += provider.purged_by(result.purged[done:])
                older = max(0, older - len(items))
                self.store.delete(IN_FLIGHT_KEY)
        finally:
            lock.release()
        return result

    def _flush_batch(self, provider: PurgeProvider, items: list[str], result: FlushResult) -> None:
        paths = collapse(items, self.wildcard_threshold)
        if not paths:
            return
        try:
            result.calls += provider.purge(paths)
            result.purged += paths
        except PurgeFailed as exc:
            remaining = set(exc.remaining)
            result.purged += [p for p in paths if p not in remaining]
            result.requeued += self._push_new(exc.remaining)
            result.error, result.retry_after = str(exc), exc.retry_after
            log.error("CDN purge failed, %d path(s) re-queued: %s", len(exc.remaining), exc)

    def _push_new(self, paths: list[str]) -> list[str]:
        new = [p for p in paths if self.store.add(_marker(p), 1, ttl=_MARK_TTL)]
        if new:
            self.store.push(QUEUE_KEY, *new)
        return new

    def _pop_all(self) -> list[str]:
        items: list[str] = []
        while chunk := self.store.pop_many(QUEUE_KEY, _DRAIN):
            items += chunk
        return items

    def _recover(self) -> None:
        """Put back a batch a crashed flusher left in flight (the lock is held)."""
        stranded = self.store.get(IN_FLIGHT_KEY)
        if stranded:
            log.warning("re-queueing %d path(s) from an interrupted flush", len(stranded))
            # Pushed unconditionally: their markers may still be set. A duplicate costs nothing,
            # since a flush deduplicates its batch.
            self.store.set_many({_marker(p): 1 for p in stranded}, ttl=_MARK_TTL)
            self.store.push(QUEUE_KEY, *stranded)
        self.store.delete(IN_FLIGHT_KEY)


def _marker(path: str) -> str:
    return _MARK + hashlib.sha256(path.encode()).hexdigest()[:32]
