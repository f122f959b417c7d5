"""The fill protocol: a missing value is computed once across threads, coroutines and processes.

In a process, concurrent callers of one key share one computation (single flight). Across processes
the first to take the key's fill lock in the store computes (its lease renewed while it runs) while
the others poll L2 for its value for as long as the lock is held: a holder that died stops renewing,
its lease lapses and a waiter takes the lock over. Only a store that stops answering a waiter for
``stampede_wait`` seconds makes it compute without the lock (the cache fails open).

The protocol is written once, as a generator of steps (:meth:`FillProtocol.steps`): it yields
:data:`COMPUTE` when the value must be computed and a number of seconds when it must wait. The sync
driver sleeps and calls; the async driver awaits, and runs every step's store I/O in a worker thread
so the event loop is never blocked on Redis or disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar, cast

from sluice.cache.keys import CacheKey
from sluice.cache.lookup import TieredLookup
from sluice.errors import SluiceError
from sluice.store import StoreLock
from sluice.store.base import RETRY_AFTER_OUTAGE

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The step yielded when the value must be computed now.
COMPUTE = object()
#: After an outage, how long fills leave a lost fill lock to its holder's renewal before taking it.
RETAKE_GRACE = 10 * RETRY_AFTER_OUTAGE
UsageOf = Callable[[Any], Mapping[str, Any] | None]


class FillProtocol:
    """Compute-through for :class:`TieredLookup`: one computation per key, cluster-wide."""

    def __init__(self, tiers: TieredLookup) -> None:
        self.tiers = tiers
        self._inflight: dict[str, Future[Any]] = {}
        self._ainflight: dict[tuple[int, str], asyncio.Future[Any]] = {}
        self._inflight_lock = threading.Lock()

    # -- the protocol --------------------------------------------------------------------------

    def steps(
        self,
        content_type: str,
        key: CacheKey,
        ttl: float | None,
        model: str | None,
        usage_of: UsageOf | None,
    ) -> Generator[object, Any, Any]:
        """The cross-process fill as steps: yields :data:`COMPUTE` or a sleep in seconds.

        The fill lock's name is the cache key, so the key is the request's idempotency key: a
        redelivered task finds the value, or the lock of the run still in flight, and waits for
        that run for as long as its holder keeps renewing the lease (however long the provider
        takes). It computes itself only when it takes the lock (the holder died and its lease
        lapsed, or it failed and released it), or, failing open, when the store has not answered
        this process for ``stampede_wait`` seconds (counted from its creation until it first
        has); through a shorter outage it waits for the store to come back, since the lock of a
        run in flight may still be there.
        """
        tiers = self.tiers
        delay = 0.005
        waited = False
        while True:
            full = tiers.generations.full_key(content_type, key.key)
            if full is None:
                # No generations known: no key to fill under. Unreadable ones fail open at once;
                # unreachable ones only once the store has been silent for stampede_wait, since
                # it may come back with them (and with a live holder's lock).
                if tiers.generations.answered or self._store_gone():
                    return (yield from self._compute(content_type, key, ttl, model, usage_of))
            else:
                lock, answered = self._try_lock(full)
                if lock is not None:
                    try:
                        found, value = tiers.lookup(content_type, key, count=False)
                        if found:  # filled between our miss and taking the lock
                            return value
                        return (yield from self._compute(content_type, key, ttl, model, usage_of))
                    finally:
                        _release(lock)
                if not answered and self._store_gone():
                    # The store is down and has been for too long to still hold a live holder's
                    # lock (a restarted Redis gives it back; until then this waits): fail open.
                    return (yield from self._compute(content_type, key, ttl, model, usage_of))
            if not waited:
                waited = True
                tiers.stats.incr(content_type, "stampede_waits")
            yield delay
            delay = min(delay * 2, 0.05)
            if full is None:
                # Re-read now, not at the next periodic refresh: another thread's answer from
                # the store says nothing about the generations.
                tiers.generations.refresh()
                continue
            found, value = tiers.lookup(content_type, key, count=False)
            if found:  # the process holding the lock has stored its value
                return value

    def _try_lock(self, full: str) -> tuple[StoreLock | None, bool]:
        """The fill lock of ``full`` as :meth:`L2RedisCache.try_lock` gives it, but never in the
        RETAKE_GRACE after an outage: a live holder whose lock the outage lost re-takes it then
        (its renewal retries every RETRY_AFTER_OUTAGE)."""
        if self._just_resumed():
            return None, True
        lock, answered = self.tiers.l2.try_lock("ai:fill:" + full, self.tiers.config.lock_lease)
        if lock is not None and self._just_resumed():
            _release(lock)  # the lock call itself was the store's first answer after the outage
            return None, True
        return lock, answered

    def _compute(
        self,
        content_type: str,
        key: CacheKey,
        ttl: float | None,
        model: str | None,
        usage_of: UsageOf | None,
    ) -> Generator[object, Any, Any]:
        """Yield :data:`COMPUTE`, count the provider call and store the value it is sent, then
        return it. A write the store did not take is retried until the store has been silent for
        ``stampede_wait``: the fill lock is still held, and its waiters would call the provider
        again once its lease lapsed. Each try writes past an open circuit (it is the breaker's
        probe), so the value is stored within a pause of the store's return, not a breaker period
        later (a holder killed in between would leave its request to be answered again), and the
        store's silence that ends the retries is the store's own, not the breaker's."""
        value = yield COMPUTE
        tiers = self.tiers
        tiers.stats.incr(content_type, "provider_calls")
        usage = usage_of(value) if usage_of else None
        pause = 0.05
        while tiers.write(content_type, key, value, ttl, model, usage, insist=True) == "lost":
            if self._store_gone():
                break
            yield pause
            pause = min(pause * 2, 0.5)
        return value

    def _just_resumed(self) -> bool:
        """Whether L2 answered again after failing less than RETAKE_GRACE ago."""
        resumed = self.tiers.l2.resumed_for()
        return resumed is not None and resumed < RETAKE_GRACE

    def _store_gone(self) -> bool:
        """Whether L2 has not answered this process for ``stampede_wait`` seconds."""
        return self.tiers.l2.silent_for() >= self.tiers.config.stampede_wait

    # -- the sync driver -----------------------------------------------------------------------

    def fill(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], T],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: UsageOf | None = None,
    ) -> T:
        """``compute()``'s value for a key just looked up and missed (its miss is counted
        already), made once across threads and processes: another may store it meanwhile."""

        def fill() -> T:
            steps = self.steps(content_type, key, ttl, model, usage_of)
            sent: Any = None
            while True:
                try:
                    step = steps.send(sent)
                except StopIteration as stop:
                    return cast(T, stop.value)
                if step is COMPUTE:
                    try:
                        sent = compute()
                    except BaseException as exc:
                        steps.throw(exc)  # releases the fill lock; never caches the error
                        raise
                else:
                    time.sleep(cast(float, step))
                    sent = None

        return self.single_flight(key.key, fill)

    def single_flight(self, name: str, fill: Callable[[], T]) -> T:
        """Run ``fill`` once for concurrent callers in this process; followers share its value."""
        with self._inflight_lock:
            future = self._inflight.get(name)
            leader = future is None
            if future is None:
                future = self._inflight[name] = Future()
        if not leader:
            try:
                return cast(T, future.result(timeout=self.tiers.config.stampede_wait))
            except Exception:
                return fill()
        try:
            value = fill()
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[name]

    # -- the async driver ----------------------------------------------------------------------

    async def run_async(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: UsageOf | None = None,
    ) -> T:
        """The cached value, or ``compute()``'s: a lookup then :meth:`fill`, with waits awaited and
        store I/O in a worker thread."""
        found, value = await asyncio.to_thread(self.tiers.lookup, content_type, key)
        if found:
            return cast(T, value)
        loop = asyncio.get_running_loop()
        flight = (id(loop), key.key)
        leader = self._ainflight.get(flight)
        if leader is not None:
            # If the leader fails or is slow, fall through and compute ourselves.
            with contextlib.suppress(Exception):
                return cast(
                    T,
                    await asyncio.wait_for(asyncio.shield(leader), self.tiers.config.stampede_wait),
                )
        future: asyncio.Future[Any] = loop.create_future()
        self._ainflight.setdefault(flight, future)
        try:
            value = await self._fill_async(content_type, key, compute, ttl, model, usage_of)
            future.set_result(value)
            return value
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: followers recompute, nobody must await it
            raise
        finally:
            if self._ainflight.get(flight) is future:
                del self._ainflight[flight]

    async def _fill_async(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], Awaitable[T]],
        ttl: float | None,
        model: str | None,
        usage_of: UsageOf | None,
    ) -> T:
        steps = self.steps(content_type, key, ttl, model, usage_of)
        sent: Any = None
        while True:
            # Each step takes the lock, reads L2 or writes the value: blocking I/O.
            done, step = await asyncio.to_thread(_advance, steps, sent)
            if done:
                return cast(T, step)
            if step is COMPUTE:
                try:
                    sent = await compute()
                except BaseException as exc:
                    with contextlib.suppress(BaseException):
                        await asyncio.to_thread(steps.throw, exc)
                    raise
            else:
                await asyncio.sleep(cast(float, step))
                sent = None


def _advance(steps: Generator[object, Any, Any], sent: Any) -> tuple[bool, Any]:
    """``(False, next step)`` or ``(True, result)``: a StopIteration cannot cross a future."""
    try:
        return False, steps.send(sent)
    except StopIteration as stop:
        return True, stop.value


def _release(lock: StoreLock) -> None:
    try:
        lock.release()
    except SluiceError as exc:
        log.warning("could not release cache fill lock %s: %s", lock.key, exc)
