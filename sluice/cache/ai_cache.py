"""AIResultCache: L1 memory over L2 shared store, stampede-proof across processes, failing open.

The cache is assembled from one module per job, the way dogpile.cache separates region, lock and
invalidation strategy:

* :mod:`~sluice.cache.lookup` - the tiers: L1 then L2, writes through both;
* :mod:`~sluice.cache.fill` - the cross-process fill protocol (single flight, fill locks);
* :mod:`~sluice.cache.invalidation` - generation counters and pub/sub;
* :mod:`~sluice.cache.stats` - cluster-wide counters in the guide's stats shape;
* :mod:`~sluice.cache.sync_api` - the guide's API for synchronous callers (``cache.sync``).

This module wires them and offers the guide's async API, whose methods run the store I/O in a worker
thread: an ``await`` never blocks the event loop on Redis or disk.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sluice.cache.breaker import CircuitBreaker
from sluice.cache.fill import FillProtocol
from sluice.cache.invalidation import Generations
from sluice.cache.keys import CacheKey
from sluice.cache.l2 import L2RedisCache
from sluice.cache.lookup import TieredLookup
from sluice.cache.memory import L1MemoryCache
from sluice.cache.policy import CacheConfig
from sluice.cache.stats import CacheStats
from sluice.cache.sync_api import Identity, SyncAIResultCache
from sluice.settings import Settings, get_settings
from sluice.store import Codec, Store, get_store

T = TypeVar("T")


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
        self.codec: Codec = self.store.codec
        self.l1 = L1MemoryCache(self.config.l1_max_entries, self.config.l1_max_bytes)
        self.breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset)
        self.l2 = L2RedisCache(self.store, self.breaker)
        self.stats = CacheStats(self.l2, self.config.stats_flush_interval)
        self.generations = Generations(self.l2, self.l1)
        self.tiers = TieredLookup(
            self.config, self.codec, self.l1, self.l2, self.generations, self.stats
        )
        self.fill = FillProtocol(self.tiers)
        self.sync = SyncAIResultCache(self)
        if self.enabled and self.store.supports_pubsub:
            self.generations.listen(self.store)

    # -- the guide's async API -----------------------------------------------------------------

    async def get_analysis(
        self,
        code: str,
        language: str,
        rules: Iterable[str] | None = None,
        model: str | None = None,
        *,
        provider: Identity = None,
    ) -> Any | None:
        return await asyncio.to_thread(
            self.sync.get_analysis, code, language, rules, model, provider=provider
        )

    async def set_analysis(
        self,
        code: str,
        language: str,
        rules: Iterable[str] | None,
        result: Any,
        model: str | None = None,
        ttl: float | None = None,
        usage: Mapping[str, Any] | None = None,
        *,
        provider: Identity = None,
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.set_analysis,
            code,
            language,
            rules,
            result,
            model,
            ttl,
            usage,
            provider=provider,
        )

    async def get_embedding(
        self, text: str, model: str | None = None, *, provider: Identity = None
    ) -> Any | None:
        return await asyncio.to_thread(self.sync.get_embedding, text, model, provider=provider)

    async def get_embeddings(
        self, texts: Sequence[str], model: str | None = None, *, provider: Identity = None
    ) -> list[Any | None]:
        return await asyncio.to_thread(self.sync.get_embeddings, texts, model, provider=provider)

    async def set_embedding(
        self,
        text: str,
        embedding: Any,
        model: str | None = None,
        ttl: float | None = None,
        *,
        provider: Identity = None,
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.set_embedding, text, embedding, model, ttl, provider=provider
        )

    async def set_embeddings(
        self,
        texts: Sequence[str],
        embeddings: Sequence[Any],
        model: str | None = None,
        ttl: float | None = None,
        *,
        provider: Identity = None,
    ) -> int:
        return await asyncio.to_thread(
            self.sync.set_embeddings, texts, embeddings, model, ttl, provider=provider
        )

    async def get_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        *,
        provider: Identity = None,
        **params: Any,
    ) -> Any | None:
        return await asyncio.to_thread(
            self.sync.get_response, messages, model, provider=provider, **params
        )

    async def set_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        response: Any,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        *,
        provider: Identity = None,
        **params: Any,
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.set_response,
            messages,
            response,
            model,
            usage,
            ttl,
            provider=provider,
            **params,
        )

    async def get_or_compute(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: Callable[[T], Mapping[str, Any] | None] | None = None,
    ) -> T:
        """Async twin of :meth:`SyncAIResultCache.get_or_compute`; never blocks the loop."""
        if not self.enabled:
            return await compute()
        return await self.fill.run_async(content_type, key, compute, ttl, model, usage_of)

    # -- invalidation and stats ----------------------------------------------------------------

    def invalidate(self, key: str) -> None:
        """Remove one entry (a key from :class:`CacheKeyGenerator`) from L2 and every L1."""
        self.generations.invalidate(key)

    def invalidate_type(self, content_type: str) -> None:
        """Invalidate every entry of one content type (one counter increment)."""
        self.generations.invalidate_type(content_type)

    def invalidate_all(self) -> None:
        """Invalidate every entry of every type (one counter increment, not FLUSHDB)."""
        self.generations.invalidate_all()

    def get_stats(self) -> dict[str, Any]:
        """The guide's stats shape, with cluster-wide counters, plus a breakdown by content type."""
        return self.stats.report(self.enabled, self.l1, self.breaker)

    def close(self) -> None:
        self.generations.close()
        self.stats.flush()

    # -- entries, for the APIs above and for tests and benchmarks -------------------------------

    def lookup(self, content_type: str, key: CacheKey, count: bool = True) -> tuple[bool, Any]:
        """``(found, value)``: L1, then L2 (filling L1). A cached None is found."""
        if not self.enabled:
            return False, None
        return self.tiers.lookup(content_type, key, count)

    def lookup_many(self, content_type: str, keys: list[CacheKey]) -> list[Any | None]:
        """One value (None where missing) per key."""
        if not self.enabled:
            return [None] * len(keys)
        return self.tiers.lookup_many(content_type, keys)

    def put(
        self,
        content_type: str,
        key: CacheKey,
        value: Any,
        ttl: float | None = None,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store ``value`` in L1 and L2; False when disabled, too large or lost (counted)."""
        if not self.enabled:
            return False
        return self.tiers.put(content_type, key, value, ttl, model, usage)

    def full_key(self, content_type: str, key: str) -> str | None:
        """The store key ``key`` lives under now (None while the generations are unreadable)."""
        return self.generations.full_key(content_type, key)


def _default_store(settings: Settings, config: CacheConfig) -> Store:
    if settings.redis_url:
        # Its own client: a timeout sized for the cache (see CacheConfig.l2_timeout).
        from sluice.store.redis import RedisStore

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
