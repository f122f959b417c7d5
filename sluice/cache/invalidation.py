"""Invalidation by generation counters: one increment makes every old entry unreachable.

Every stored key ends in ``@<all generation>.<type generation>``, so invalidating a type (or
everything) is one counter increment, never FLUSHDB. Each process re-reads the generations at most
once a second, and on Redis a pub/sub message makes every process re-read them (and drop a single
invalidated key from L1) at once. Single-key invalidations are also logged in the store (a sequence
counter and one short-lived entry per invalidation), so processes that get no pub/sub message (the
disk store, or a Redis subscriber that was reconnecting) drop the key from their L1 at their next
refresh.

Failing open: while the generations cannot be read (L2 down from the start, or a counter holding
something that is not a counter), no key can be formed and every lookup is a miss, logged; a
process that knew them keeps using what it knew. ``invalidate_*`` repair a malformed counter.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import L1MemoryCache
from sluice.cache.policy import CONTENT_TYPES, check_content_type
from sluice.errors import BackendUnavailable, InvalidInput
from sluice.store import Store

log = logging.getLogger(__name__)

CHANNEL = "ai:invalidate"
GENERATION_KEYS = {scope: f"ai:gen:{scope}" for scope in ("all", *CONTENT_TYPES)}
#: How often a process re-reads the generation counters without being told to.
GENERATION_REFRESH = 1.0
INVALIDATION_SEQ = "ai:inval:seq"
INVALIDATION_LOG_TTL = 600.0


def content_type_of(key: str) -> str:
    """The content type of a key made by :class:`~sluice.cache.keys.CacheKeyGenerator`."""
    parts = key.split(":")
    if len(parts) < 3 or parts[0] != "ai" or parts[1] not in CONTENT_TYPES:
        raise InvalidInput(f"{key!r} is not an AI cache key (expected ai:<type>:v1:...)")
    return parts[1]


class Generations:
    """This process's view of the generation counters, and the invalidations built on them."""

    def __init__(self, l2: L2RedisCache, l1: L1MemoryCache) -> None:
        self._l2 = l2
        self._l1 = l1
        self._known: dict[str, int] | None = None
        # "@<all>.<type>" by content type, made once per change of the generations (every
        # lookup forms a key).
        self._suffixes: dict[str, str] | None = None
        self._invalidation_seq: int | None = None
        self._read_at = float("-inf")
        #: Whether the store answered the last read of the counters (a malformed one included).
        self.answered = False
        self._refreshing = threading.Lock()
        self._closed = threading.Event()

    def full_key(self, content_type: str, key: str) -> str | None:
        """``key`` under the current generations; None while they cannot be read (a miss)."""
        if time.monotonic() - self._read_at >= GENERATION_REFRESH:
            # Concurrent callers wait for the one read (a key formed before the first read
            # completes would be None, a needless miss).
            with self._refreshing:
                if time.monotonic() - self._read_at >= GENERATION_REFRESH:
                    self._refresh()
        suffixes = self._suffixes  # _key_in, inlined: every lookup's path
        return None if suffixes is None else key + suffixes[content_type]

    def _key_in(self, content_type: str, key: str) -> str | None:
        suffixes = self._suffixes
        if suffixes is None:
            return None
        return key + suffixes[content_type]

    def refresh(self) -> None:
        """Re-read the counters (and apply the single-key invalidation log); never raises."""
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        try:
            self._read()
        finally:
            self._read_at = time.monotonic()

    def _read(self) -> None:
        scopes = list(GENERATION_KEYS)
        values, self.answered = self._l2.counters(
            [GENERATION_KEYS[s] for s in scopes] + [INVALIDATION_SEQ]
        )
        if values is None:
            if self._known is None:
                log.warning(
                    "AI cache generations unreadable; every lookup is a miss until they are"
                )
            return
        *values, seq = values
        self._apply_invalidation_log(seq)
        fresh = dict(zip(scopes, values, strict=True))
        if fresh != self._known:
            if self._known is not None:
                self._l1.clear()  # old-generation entries can never be hit again; free them
            self._known = fresh
            self._suffixes = {ct: f"@{fresh['all']}.{fresh[ct]}" for ct in CONTENT_TYPES}

    def _apply_invalidation_log(self, seq: int) -> None:
        """Drop from L1 the keys invalidated (by any process) since the last refresh."""
        last, self._invalidation_seq = self._invalidation_seq, seq
        if last is None or seq <= last:
            return  # first read: L1 is empty of anything older; or nothing new
        names = [f"ai:inval:{n}" for n in range(max(last + 1, seq - 1000), seq + 1)]
        for key in self._l2.get_many("invalidation", names).values():
            self.forget(key)

    def forget(self, key: object) -> None:
        """Drop one invalidated key (as published) from this process's L1."""
        with contextlib.suppress(InvalidInput):
            if isinstance(key, str):
                full = self._key_in(content_type_of(key), key)
                if full is not None:
                    self._l1.delete(full)

    # -- invalidating --------------------------------------------------------------------------

    def invalidate(self, key: str) -> None:
        """Remove one entry from L2 and every process's L1."""
        content_type = content_type_of(key)
        full = self.full_key(content_type, key)
        if full is not None:
            self._l1.delete(full)
            self._l2.delete(content_type, [full])
        self._l2.repair_counters([INVALIDATION_SEQ], time.time_ns())
        seq = self._l2.bump(INVALIDATION_SEQ)
        if seq is not None:
            self._l2.set("invalidation", f"ai:inval:{seq}", key, INVALIDATION_LOG_TTL)
        self._l2.publish(CHANNEL, {"key": key})

    def invalidate_type(self, content_type: str) -> None:
        """Invalidate every entry of one content type (one counter increment)."""
        self._bump(check_content_type(content_type))

    def invalidate_all(self) -> None:
        """Invalidate every entry of every type (one counter increment, not FLUSHDB)."""
        self._bump("all")

    def _bump(self, scope: str) -> None:
        # A malformed counter would keep every process missing; invalidating is the repair.
        self._l2.repair_counters([*GENERATION_KEYS.values(), INVALIDATION_SEQ], time.time_ns())
        if self._l2.bump(GENERATION_KEYS[scope]) is None:
            raise BackendUnavailable("cannot invalidate: the shared store is unavailable; retry")
        self.refresh()
        self._l2.publish(CHANNEL, {"generation": scope})

    # -- pub/sub -------------------------------------------------------------------------------

    def listen(self, store: Store) -> None:
        """Apply invalidations published by other processes (Redis) until :meth:`close`."""
        threading.Thread(
            target=self._listen, args=(store,), name="sluice-cache-invalidation", daemon=True
        ).start()

    def close(self) -> None:
        self._closed.set()

    def _listen(self, store: Store) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            try:
                with store.subscribe(CHANNEL) as subscription:
                    backoff = 0.1
                    self.refresh()  # catch up on anything missed while disconnected
                    while not self._closed.is_set():
                        message = subscription.get(timeout=1.0)
                        if isinstance(message, dict) and "key" in message:
                            self.forget(message["key"])
                        elif message is not None:
                            self.refresh()
            except Exception as exc:
                # Whatever the client raises (an outage, a connection closed under us), the
                # listener must survive it and reconnect, or invalidations stop arriving.
                if self._closed.is_set():
                    return
                log.debug("cache invalidation listener reconnecting: %s", exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)
