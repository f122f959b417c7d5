"""AIResultCache: L1 memory over L2 shared store, stampede-proof across processes, failing open.

Lookups go L1 -> L2 (an L2 hit fills L1). A miss computed through :meth:`SyncAIResultCache.get_or_compute`
(or its async twin) is made once however many threads, coroutines and processes miss the same key at
once: in-process callers share one computation, and across processes the first to take the key's fill
lock in the store computes (its lease renewed while it runs) while the others poll L2 for its value, up
to ``stampede_wait`` seconds, then compute themselves.

Invalidation bumps generation counters that are part of every stored key, so it is one increment
(never FLUSHDB) and old entries simply stop being reachable. Each process re-reads the generations at
most once a second, and on Redis a pub/sub message makes every process re-read them (and drop a
single invalidated key from L1) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar, cast

from sluice.cache.breaker import CircuitBreaker
from sluice.cache.keys import CacheKey, CacheKeyGenerator
from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import MISSING, L1MemoryCache
from sluice.cache.policy import (
    ANALYSIS,
    CONTENT_TYPES,
    EMBEDDING,
    EVENTS,
    RESPONSE,
    CacheConfig,
    check_content_type,
)
from sluice.errors import BackendUnavailable, CodecError, InvalidInput, SluiceError
from sluice.settings import Settings, get_settings
from sluice.store import BufferedCounters, Codec, RedisStore, Store, get_store

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "ai:invalidate"
GENERATION_KEYS = {scope: f"ai:gen:{scope}" for scope in ("all", *CONTENT_TYPES)}
#: How often a process re-reads the generation counters without being told to.
GENERATION_REFRESH = 1.0
#: Single-key invalidations are also logged in the store (a sequence counter and one short-lived
#: entry per invalidation), so processes that get no pub/sub message (the disk store, or a Redis
#: subscriber that was reconnecting) drop the key from their L1 at their next generation refresh.
INVALIDATION_SEQ = "ai:inval:seq"
INVALIDATION_LOG_TTL = 600.0
_COMPUTE = object()  # the step a fill yields when it needs the value computed


class SyncAIResultCache:
    """The synchronous API, for Celery tasks and plain code (``cache.sync``)."""

    def __init__(self, cache: AIResultCache) -> None:
        self._cache = cache

    # -- analysis ------------------------------------------------------------------------------

    def get_analysis(
        self, code: str, language: str, rules: Iterable[str] | None = None, model: str | None = None
    ) -> Any | None:
        return self._cache.lookup(
            ANALYSIS, CacheKeyGenerator.analysis(code, language, rules, model)
        )[1]

    def set_analysis(
        self,
        code: str,
        language: str,
        rules: Iterable[str] | None,
        result: Any,
        model: str | None = None,
        ttl: float | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        key = CacheKeyGenerator.analysis(code, language, rules, model)
        return self._cache.put(ANALYSIS, key, result, ttl, model, usage)

    # -- embeddings ----------------------------------------------------------------------------

    def get_embedding(self, text: str, model: str | None = None) -> Any | None:
        return self._cache.lookup(EMBEDDING, CacheKeyGenerator.embedding(text, model))[1]

    def get_embeddings(self, texts: Sequence[str], model: str | None = None) -> list[Any | None]:
        """One entry per text (None where missing), with one L2 round trip for all L1 misses."""
        return self._cache.lookup_many(
            EMBEDDING, [CacheKeyGenerator.embedding(t, model) for t in texts]
        )

    def set_embedding(
        self,
        text: str,
        embedding: Any,
        model: str | None = None,
        ttl: float | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        return self._cache.put(
            EMBEDDING, CacheKeyGenerator.embedding(text, model), embedding, ttl, model, usage
        )

    def set_embeddings(
        self,
        texts: Sequence[str],
        embeddings: Sequence[Any],
        model: str | None = None,
        ttl: float | None = None,
    ) -> int:
        """Store each text's embedding; returns how many were stored."""
        if len(texts) != len(embeddings):
            raise InvalidInput(f"got {len(texts)} texts but {len(embeddings)} embeddings")
        return sum(
            self.set_embedding(t, e, model, ttl) for t, e in zip(texts, embeddings, strict=True)
        )

    # -- model responses -----------------------------------------------------------------------

    def get_response(
        self, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> Any | None:
        key = CacheKeyGenerator.response(messages, model, **params)
        if self._cache.config.response_cacheable(params) is not None:
            return None
        return self._cache.lookup(RESPONSE, key)[1]

    def set_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        response: Any,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        **params: Any,
    ) -> bool:
        """Store a response unless its parameters make it uncacheable (then False, counted)."""
        key = CacheKeyGenerator.response(messages, model, **params)
        reason = self._cache.config.response_cacheable(params)
        if reason is not None:
            self._cache.stats.incr(RESPONSE, "uncacheable")
            log.debug("not caching response: %s", reason)
            return False
        return self._cache.put(RESPONSE, key, response, ttl, model, usage)

    # -- compute-through -----------------------------------------------------------------------

    def get_or_compute(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], T],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: Callable[[T], Mapping[str, Any] | None] | None = None,
    ) -> T:
        """The cached value, or ``compute()``'s, made once across threads and processes."""
        cache = self._cache
        if not cache.enabled:
            return compute()
        found, value = cache.lookup(content_type, key)
        if found:
            return value

        def fill() -> T:
            steps = cache.fill_steps(content_type, key, ttl, model, usage_of)
            sent: Any = None
            while True:
                try:
                    step = steps.send(sent)
                except StopIteration as stop:
                    return stop.value
                if step is _COMPUTE:
                    try:
                        sent = compute()
                    except BaseException as exc:
                        steps.throw(exc)  # releases the fill lock; never caches the error
                        raise
                else:
                    time.sleep(cast(float, step))
                    sent = None

        return cache.single_flight(key.key, fill)

    # -- invalidation and stats ----------------------------------------------------------------

    def invalidate(self, key: str) -> None:
        self._cache.invalidate(key)

    def get_stats(self) -> dict[str, Any]:
        return self._cache.get_stats()


class AIResultCache:
    """The guide's cache: async methods as in the guide, ``.sync`` for synchronous callers."""

    def __init__(
        self,
        store: Store | None = None,
        config: CacheConfig | None = None,
        enabled: bool | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.config = config or CacheConfig.from_env()
        self.enabled = settings.cache_enabled if enabled is None else enabled
        self.store = store or _default_store(settings, self.config)
        self.codec: Codec = getattr(self.store, "codec", Codec())
        self.l1 = L1MemoryCache(self.config.l1_max_entries, self.config.l1_max_bytes)
        self.breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset)
        self.l2 = L2RedisCache(self.store, self.breaker)
        self.stats = BufferedCounters(
            self._flush_stats, self.l2.read_stats, self.config.stats_flush_interval
        )
        self.l2.stats = self.stats
        self.sync = SyncAIResultCache(self)
        self._generations: dict[str, int] = {}
        self._invalidation_seq: int | None = None
        self._generations_read_at = float("-inf")
        self._inflight: dict[str, Future[Any]] = {}
        self._ainflight: dict[tuple[int, str], asyncio.Future[Any]] = {}
        self._inflight_lock = threading.Lock()
        self._closed = threading.Event()
        if self.enabled and self.store.supports_pubsub:
            threading.Thread(
                target=self._listen, name="sluice-cache-invalidation", daemon=True
            ).start()

    # -- the guide's async API -----------------------------------------------------------------

    async def get_analysis(
        self, code: str, language: str, rules: Iterable[str] | None = None, model: str | None = None
    ) -> Any | None:
        return self.sync.get_analysis(code, language, rules, model)

    async def set_analysis(
        self,
        code: str,
        language: str,
        rules: Iterable[str] | None,
        result: Any,
        model: str | None = None,
        ttl: float | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        return self.sync.set_analysis(code, language, rules, result, model, ttl, usage)

    async def get_embedding(self, text: str, model: str | None = None) -> Any | None:
        return self.sync.get_embedding(text, model)

    async def get_embeddings(
        self, texts: Sequence[str], model: str | None = None
    ) -> list[Any | None]:
        return self.sync.get_embeddings(texts, model)

    async def set_embedding(
        self, text: str, embedding: Any, model: str | None = None, ttl: float | None = None
    ) -> bool:
        return self.sync.set_embedding(text, embedding, model, ttl)

    async def set_embeddings(
        self,
        texts: Sequence[str],
        embeddings: Sequence[Any],
        model: str | None = None,
        ttl: float | None = None,
    ) -> int:
        return self.sync.set_embeddings(texts, embeddings, model, ttl)

    async def get_response(
        self, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> Any | None:
        return self.sync.get_response(messages, model, **params)

    async def set_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        response: Any,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        **params: Any,
    ) -> bool:
        return self.sync.set_response(messages, response, model, usage, ttl, **params)

    async def get_or_compute(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: Callable[[T], Mapping[str, Any] | None] | None = None,
    ) -> T:
        """Async twin of :meth:`SyncAIResultCache.get_or_compute`; waits never block the loop."""
        if not self.enabled:
            return await compute()
        found, value = self.lookup(content_type, key)
        if found:
            return value
        flight = (id(asyncio.get_running_loop()), key.key)
        leader = self._ainflight.get(flight)
        if leader is not None:
            # If the leader fails or is slow, fall through and compute ourselves.
            with contextlib.suppress(Exception):
                return await asyncio.wait_for(asyncio.shield(leader), self.config.stampede_wait)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ainflight.setdefault(flight, future)
        try:
            steps = self.fill_steps(content_type, key, ttl, model, usage_of)
            sent: Any = None
            while True:
                try:
                    step = steps.send(sent)
                except StopIteration as stop:
                    future.set_result(stop.value)
                    return stop.value
                if step is _COMPUTE:
                    try:
                        sent = await compute()
                    except BaseException as exc:
                        steps.throw(exc)
                        raise
                else:
                    await asyncio.sleep(cast(float, step))
                    sent = None
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: followers recompute, nobody must await it
            raise
        finally:
            if self._ainflight.get(flight) is future:
                del self._ainflight[flight]

    def invalidate(self, key: str) -> None:
        """Remove one entry (a key from :class:`CacheKeyGenerator`) from L2 and every L1."""
        content_type = _content_type_of(key)
        full = self._full_key(content_type, key)
        self.l1.delete(full)
        self.l2.delete(content_type, [full])
        seq = self.l2.bump(INVALIDATION_SEQ)
        if seq is not None:
            self.l2.set("invalidation", f"ai:inval:{seq}", key, INVALIDATION_LOG_TTL)
        self.l2.publish(CHANNEL, {"key": key})

    def invalidate_type(self, content_type: str) -> None:
        """Invalidate every entry of one content type (one counter increment)."""
        self._bump(check_content_type(content_type))

    def invalidate_all(self) -> None:
        """Invalidate every entry of every type (one counter increment, not FLUSHDB)."""
        self._bump("all")

    def get_stats(self) -> dict[str, Any]:
        """The guide's stats shape, with cluster-wide counters, plus a breakdown by content type."""
        if self.enabled:
            totals, shared = self.stats.totals()
        else:  # CACHE_ENABLED=false: the store is never touched, not even for stats
            totals, shared = Counter[str](), False
        by_type = {ct: {e: totals[f"{ct}:{e}"] for e in EVENTS} for ct in CONTENT_TYPES}
        l1_hits = sum(t["l1_hits"] for t in by_type.values())
        l2_hits = sum(t["l2_hits"] for t in by_type.values())
        misses = sum(t["misses"] for t in by_type.values())
        hits = l1_hits + l2_hits
        # Every scope's errors (content types, generations, locks, invalidations, stats flushes).
        l2_errors = sum(n for name, n in totals.items() if name.endswith(":l2_errors"))
        return {
            "enabled": self.enabled,
            "global": {
                "hits": hits,
                "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            },
            "savings_estimate": {
                "ai_calls_saved": hits,
                "estimated_cost_saved_usd": round(
                    sum(t["cost_saved_micro_usd"] for t in by_type.values()) / 1e6, 6
                ),
            },
            "l1": {
                "size": len(self.l1),
                "memory_usage_bytes": self.l1.memory_usage_bytes,
                "hits": l1_hits,
            },
            "l2": {
                "hits": l2_hits,
                "misses": sum(t["l2_misses"] for t in by_type.values()),
                "errors": l2_errors,
                "circuit": self.breaker.state,
            },
            "by_type": by_type,
            "cluster_wide": shared,
        }

    def close(self) -> None:
        self._closed.set()
        self.stats.flush()

    # -- the machinery shared by both APIs ------------------------------------------------------

    def lookup(self, content_type: str, key: CacheKey, count: bool = True) -> tuple[bool, Any]:
        """``(found, value)``: L1, then L2 (filling L1). A cached None is found."""
        if not self.enabled:
            return False, None
        full = self._full_key(content_type, key.key)
        entry = self.l1.get(full)
        if entry is not MISSING and entry[1] == key.fingerprint:
            if count:
                self._count_hit(content_type, "l1_hits", entry[2])
            return True, entry[0]
        envelope = self.l2.get(content_type, full)
        found, value = self._accept(content_type, full, key, envelope)
        if count:
            if found:
                self._count_hit(content_type, "l2_hits", cast(dict[str, Any], envelope)["cost"])
            else:
                self.stats.incr(content_type, "l2_misses")
                self.stats.incr(content_type, "misses")
        return found, value

    def lookup_many(self, content_type: str, keys: list[CacheKey]) -> list[Any | None]:
        results: list[Any | None] = [None] * len(keys)
        if not self.enabled:
            return results
        fulls = [self._full_key(content_type, k.key) for k in keys]
        pending = []
        for i, (full, key) in enumerate(zip(fulls, keys, strict=True)):
            entry = self.l1.get(full)
            if entry is not MISSING and entry[1] == key.fingerprint:
                self._count_hit(content_type, "l1_hits", entry[2])
                results[i] = entry[0]
            else:
                pending.append(i)
        if pending:
            found = self.l2.get_many(content_type, list({fulls[i] for i in pending}))
            for i in pending:
                envelope = found.get(fulls[i])
                ok, value = self._accept(content_type, fulls[i], keys[i], envelope)
                if ok:
                    self._count_hit(content_type, "l2_hits", envelope["cost"])  # type: ignore[index]
                    results[i] = value
                else:
                    self.stats.incr(content_type, "l2_misses")
                    self.stats.incr(content_type, "misses")
        return results

    def put(
        self,
        content_type: str,
        key: CacheKey,
        value: Any,
        ttl: float | None = None,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store ``value`` in L1 and L2; False when disabled or too large (counted).

        Raises :class:`InvalidInput` when the value cannot be encoded: an unstorable value is the
        caller's bug and must not vanish silently.
        """
        if not self.enabled:
            return False
        ttl = self.config.ttl_for(content_type) if ttl is None else ttl
        if ttl <= 0:
            raise InvalidInput(f"ttl must be positive, got {ttl!r}")
        envelope = {
            "fp": key.fingerprint,
            "v": value,
            "exp": time.time() + ttl,
            "cost": self.config.cost_usd(model, usage),
        }
        try:
            encoded = self.codec.encode(envelope)
        except CodecError as exc:
            raise InvalidInput(f"cannot cache this {content_type} value: {exc}") from None
        if len(encoded) > self.config.max_entry_bytes:
            self.stats.incr(content_type, "too_large")
            return False
        full = self._full_key(content_type, key.key)
        # L1 keeps the decoded form, so an L1 hit returns exactly what an L2 hit would.
        stored = self.codec.decode(encoded)
        self.l1.set(
            full,
            (stored["v"], key.fingerprint, stored["cost"]),
            min(ttl, self.config.l1_max_ttl),
            len(encoded),
        )
        # Its encoded size travels with the entry, so an L2 hit can charge L1 without re-encoding.
        self.l2.set(content_type, full, {**envelope, "n": len(encoded)}, ttl)
        self.stats.incr(content_type, "sets")
        return True

    def fill_steps(
        self,
        content_type: str,
        key: CacheKey,
        ttl: float | None,
        model: str | None,
        usage_of: Callable[[Any], Mapping[str, Any] | None] | None,
    ) -> Generator[object, Any, Any]:
        """The cross-process fill protocol as steps: yields ``_COMPUTE`` or a sleep in seconds."""
        deadline = time.monotonic() + self.config.stampede_wait
        full = self._full_key(content_type, key.key)
        delay = 0.005
        waited = False
        while True:
            lock = (
                self.l2.try_lock("ai:fill:" + full, self.config.lock_lease)
                if self.l2.usable()
                else None
            )
            if lock is not None:
                try:
                    found, value = self.lookup(content_type, key, count=False)
                    if found:  # filled between our miss and taking the lock
                        return value
                    value = yield _COMPUTE
                    self._computed(content_type, key, value, ttl, model, usage_of)
                    return value
                finally:
                    self._release(lock)
            if not self.l2.usable() or time.monotonic() >= deadline:
                value = yield _COMPUTE
                self._computed(content_type, key, value, ttl, model, usage_of)
                return value
            if not waited:
                waited = True
                self.stats.incr(content_type, "stampede_waits")
            yield delay
            delay = min(delay * 2, 0.05)
            found, value = self.lookup(content_type, key, count=False)
            if found:  # the process holding the lock has stored its value
                return value

    def single_flight(self, name: str, fill: Callable[[], T]) -> T:
        """Run ``fill`` once for concurrent callers in this process; followers share its value."""
        with self._inflight_lock:
            future = self._inflight.get(name)
            leader = future is None
            if future is None:
                future = self._inflight[name] = Future()
        if not leader:
            try:
                return future.result(timeout=self.config.stampede_wait)
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

    # -- internals -----------------------------------------------------------------------------

    def _computed(
        self,
        content_type: str,
        key: CacheKey,
        value: Any,
        ttl: float | None,
        model: str | None,
        usage_of: Callable[[Any], Mapping[str, Any] | None] | None,
    ) -> None:
        self.stats.incr(content_type, "provider_calls")
        self.put(content_type, key, value, ttl, model, usage_of(value) if usage_of else None)

    def _accept(
        self, content_type: str, full: str, key: CacheKey, envelope: Any
    ) -> tuple[bool, Any]:
        if envelope is None:
            return False, None
        if not _well_formed(envelope):
            # A foreign writer's value, or one of ours damaged: a counted miss, never an error.
            self.stats.incr(content_type, "corrupt")
            return False, None
        if envelope["fp"] != key.fingerprint:
            return False, None  # a digest collision: another input's entry
        remaining = float(envelope["exp"]) - time.time()
        if remaining > 0:
            self.l1.set(
                full,
                (envelope["v"], key.fingerprint, envelope["cost"]),
                min(remaining, self.config.l1_max_ttl),
                _encoded_size(envelope) or len(self.codec.encode(envelope)),
            )
        return True, envelope["v"]

    def _count_hit(self, content_type: str, tier: str, cost: float) -> None:
        self.stats.incr(content_type, tier)
        if cost:
            self.stats.incr(content_type, "cost_saved_micro_usd", round(float(cost) * 1e6))

    def _release(self, lock: Any) -> None:
        try:
            lock.release()
        except SluiceError as exc:
            log.warning("could not release cache fill lock %s: %s", lock.key, exc)

    def _full_key(self, content_type: str, key: str) -> str:
        if time.monotonic() - self._generations_read_at >= GENERATION_REFRESH:
            self._read_generations()
        return self._key_in(content_type, key)

    def _key_in(self, content_type: str, key: str) -> str:
        """``key`` under the generations known now (no refresh)."""
        return f"{key}@{self._generations.get('all', 0)}.{self._generations.get(content_type, 0)}"

    def _read_generations(self) -> None:
        self._generations_read_at = time.monotonic()
        scopes = list(GENERATION_KEYS)
        values = self.l2.counters([GENERATION_KEYS[s] for s in scopes] + [INVALIDATION_SEQ])
        if values is None:
            return  # L2 down: keep the generations we know
        *values, seq = values
        self._apply_invalidation_log(seq)
        fresh = dict(zip(scopes, values, strict=True))
        if fresh != self._generations:
            if self._generations:
                self.l1.clear()  # old-generation entries can never be hit again; free them
            self._generations = fresh

    def _apply_invalidation_log(self, seq: int) -> None:
        """Drop from L1 the keys invalidated (by any process) since the last refresh."""
        last, self._invalidation_seq = self._invalidation_seq, seq
        if last is None or seq <= last:
            return  # first read: L1 is empty of anything older; or nothing new
        names = [f"ai:inval:{n}" for n in range(max(last + 1, seq - 1000), seq + 1)]
        for key in self.l2.get_many("invalidation", names).values():
            with contextlib.suppress(InvalidInput):
                if isinstance(key, str):
                    content_type = _content_type_of(key)
                    self.l1.delete(self._key_in(content_type, key))

    def _bump(self, scope: str) -> None:
        if self.l2.bump(GENERATION_KEYS[scope]) is None:
            raise BackendUnavailable("cannot invalidate: the shared store is unavailable; retry")
        self._read_generations()
        self.l2.publish(CHANNEL, {"generation": scope})

    def _flush_stats(self, batch: dict[str, int]) -> None:
        if not self.l2.usable():
            raise BackendUnavailable("L2 circuit open")
        self.l2.add_stats(batch)

    def _listen(self) -> None:
        """Apply invalidations published by other processes (Redis); reconnects after outages."""
        backoff = 0.1
        while not self._closed.is_set():
            try:
                with self.store.subscribe(CHANNEL) as subscription:
                    backoff = 0.1
                    self._read_generations()  # catch up on anything missed while disconnected
                    while not self._closed.is_set():
                        message = subscription.get(timeout=1.0)
                        if isinstance(message, dict) and "key" in message:
                            content_type = _content_type_of(str(message["key"]))
                            self.l1.delete(self._full_key(content_type, str(message["key"])))
                        elif message is not None:
                            self._read_generations()
            except Exception as exc:
                # Whatever the client raises (an outage, a connection closed under us), the
                # listener must survive it and reconnect, or invalidations stop arriving.
                if self._closed.is_set():
                    return
                log.debug("cache invalidation listener reconnecting: %s", exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _well_formed(envelope: Any) -> bool:
    """Whether ``envelope`` has the shape :meth:`AIResultCache.put` writes (types included)."""
    return (
        isinstance(envelope, dict)
        and {"fp", "v", "exp", "cost"} <= envelope.keys()
        and isinstance(envelope["fp"], str)
        and _real(envelope["exp"])
        and _real(envelope["cost"])
        and envelope["cost"] >= 0
    )


def _encoded_size(envelope: dict[str, Any]) -> int | None:
    size = envelope.get("n")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _content_type_of(key: str) -> str:
    parts = key.split(":")
    if len(parts) < 3 or parts[0] != "ai" or parts[1] not in CONTENT_TYPES:
        raise InvalidInput(f"{key!r} is not an AI cache key (expected ai:<type>:v1:...)")
    return parts[1]


def _default_store(settings: Settings, config: CacheConfig) -> Store:
    if settings.redis_url:
        # Its own client with a short timeout: a slow L2 must cost less than the call it saves.
        codec = Codec(settings.codec, settings.compress_min_bytes)
        return RedisStore(
            settings.redis_url, settings.key_prefix, codec, socket_timeout=config.l2_timeout
        )
    return get_store(settings)


_caches: dict[int, AIResultCache] = {}
_caches_lock = threading.Lock()


def get_ai_cache() -> AIResultCache:
    """The process's cache, built from the settings (one per process, rebuilt after a fork)."""
    pid = os.getpid()
    with _caches_lock:
        cache = _caches.get(pid)
        if cache is None:
            _caches.clear()
            cache = _caches[pid] = AIResultCache()
        return cache


def reset_ai_cache() -> None:
    """Forget this process's cache (tests, settings reloads)."""
    with _caches_lock:
        for cache in _caches.values():
            cache.close()
        _caches.clear()
