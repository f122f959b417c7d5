"""AI result cache (guide section 1): L1 memory over the shared store, stampede-proof, fail-open."""

from sluice.cache.ai_cache import AIResultCache, get_ai_cache, reset_ai_cache
from sluice.cache.decorators import cached_ai_call
from sluice.cache.keys import CacheKeyGenerator
from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import L1MemoryCache
from sluice.cache.policy import ANALYSIS, EMBEDDING, RESPONSE, CacheConfig

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # the cache
    "AIResultCache",
    "get_ai_cache",
    "reset_ai_cache",
    "cached_ai_call",
    "CacheKeyGenerator",
    "CacheConfig",
    # content types
    "ANALYSIS",
    "EMBEDDING",
    "RESPONSE",
    # tiers
    "L1MemoryCache",
    "L2RedisCache",
]
