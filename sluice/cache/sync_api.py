"""The guide's cache API, synchronous: for Celery tasks and plain code (``cache.sync``).

Every method takes an optional ``provider``: the :meth:`~sluice.ai.AIProvider.cache_identity` of the
provider that made (or would make) the result, so results of different providers, rule sets or
prompts never share an entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sluice.cache.keys import CacheKey, CacheKeyGenerator
from sluice.cache.policy import ANALYSIS, EMBEDDING, RESPONSE
from sluice.errors import InvalidInput

if TYPE_CHECKING:
    from sluice.cache.ai_cache import AIResultCache

log = logging.getLogger(__name__)
T = TypeVar("T")
Identity = Mapping[str, Any] | None


class SyncAIResultCache:
    """The synchronous API of an :class:`~sluice.cache.AIResultCache` (its ``.sync``)."""

    def __init__(self, cache: AIResultCache) -> None:
        self._cache = cache

    # -- analysis ------------------------------------------------------------------------------

    def get_analysis(
        self,
        code: str,
        language: str,
        rules: Iterable[str] | None = None,
        model: str | None = None,
        *,
        provider: Identity = None,
    ) -> Any | None:
        key = CacheKeyGenerator.analysis(code, language, rules, model, provider)
        return self._cache.lookup(ANALYSIS, key)[1]

    def set_analysis(
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
        key = CacheKeyGenerator.analysis(code, language, rules, model, provider)
        return self._cache.put(ANALYSIS, key, result, ttl, model, usage)

    # -- embeddings ----------------------------------------------------------------------------

    def get_embedding(
        self, text: str, model: str | None = None, *, provider: Identity = None
    ) -> Any | None:
        key = CacheKeyGenerator.embedding(text, model, provider)
        return self._cache.lookup(EMBEDDING, key)[1]

    def get_embeddings(
        self, texts: Sequence[str], model: str | None = None, *, provider: Identity = None
    ) -> list[Any | None]:
        """One entry per text (None where missing), with one L2 round trip for all L1 misses."""
        keys = [CacheKeyGenerator.embedding(t, model, provider) for t in texts]
        return self._cache.lookup_many(EMBEDDING, keys)

    def set_embedding(
        self,
        text: str,
        embedding: Any,
        model: str | None = None,
        ttl: float | None = None,
        usage: Mapping[str, Any] | None = None,
        *,
        provider: Identity = None,
    ) -> bool:
        key = CacheKeyGenerator.embedding(text, model, provider)
        return self._cache.put(EMBEDDING, key, embedding, ttl, model, usage)

    def set_embeddings(
        self,
        texts: Sequence[str],
        embeddings: Sequence[Any],
        model: str | None = None,
        ttl: float | None = None,
        *,
        provider: Identity = None,
    ) -> int:
        """Store each text's embedding; returns how many were stored."""
        if len(texts) != len(embeddings):
            raise InvalidInput(f"got {len(texts)} texts but {len(embeddings)} embeddings")
        return sum(
            self.set_embedding(t, e, model, ttl, provider=provider)
            for t, e in zip(texts, embeddings, strict=True)
        )

    # -- model responses -----------------------------------------------------------------------

    def get_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        *,
        provider: Identity = None,
        **params: Any,
    ) -> Any | None:
        key = CacheKeyGenerator.response(messages, model, provider, **params)
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
        *,
        provider: Identity = None,
        **params: Any,
    ) -> bool:
        """Store a response unless its parameters make it uncacheable (then False, counted)."""
        key = CacheKeyGenerator.response(messages, model, provider, **params)
        reason = self._cache.config.response_cacheable(params)
        if reason is not None:
            self._cache.stats.incr(RESPONSE, "uncacheable")
            log.debug("not caching response: %s", reason)
            return False
        return self._cache.put(RESPONSE, key, response, ttl, model, usage)

    # -- compute-through, invalidation, stats --------------------------------------------------

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
        found, value = self._cache.lookup(content_type, key)
        if found:
            return cast(T, value)
        return self.fill_missing(content_type, key, compute, ttl, model, usage_of)

    def found_many(self, content_type: str, keys: Sequence[CacheKey]) -> list[tuple[bool, Any]]:
        """``(found, value)`` per key, with one L2 round trip for all L1 misses: the first half
        of :meth:`get_or_compute` for many keys at once (hits and misses counted here)."""
        if not self._cache.enabled:
            return [(False, None)] * len(keys)
        return self._cache.tiers.lookup_each(content_type, list(keys))

    def fill_missing(
        self,
        content_type: str,
        key: CacheKey,
        compute: Callable[[], T],
        ttl: float | None = None,
        model: str | None = None,
        usage_of: Callable[[T], Mapping[str, Any] | None] | None = None,
    ) -> T:
        """The second half: ``compute()``'s value for a key :meth:`found_many` just missed, made
        once across threads and processes (another may have stored it meanwhile)."""
        if not self._cache.enabled:
            return compute()
        return self._cache.fill.fill(content_type, key, compute, ttl, model, usage_of)

    def invalidate(self, key: str) -> None:
        self._cache.invalidate(key)

    def get_stats(self) -> dict[str, Any]:
        return self._cache.get_stats()
