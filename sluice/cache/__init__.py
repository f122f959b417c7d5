"""AI result cache (guide section 1): L1 memory over the shared store, stampede-proof, fail-open."""

from sluice.cache.ai_cache import AIResultCache, get_ai_cache, reset_ai_cache
from sluice.cache.breaker import CircuitBreaker
from sluice.cache.decorators import cached_ai_call
from sluice.cache.fill import FillProtocol
from sluice.cache.invalidation import Generations
from sluice.cache.keys import CacheKey, CacheKeyGenerator
from sluice.cache.l2 import L2RedisCache
from sluice.cache.lookup import TieredLookup
from sluice.cache.memory import L1MemoryCache
from sluice.cache.policy import ANALYSIS, EMBEDDING, RESPONSE, CacheConfig
from sluice.cache.stats import CacheStats
from sluice.cache.sync_api import SyncAIResultCache

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # the cache
    "AIResultCache",
    "SyncAIResultCache",
    "get_ai_cache",
    "reset_ai_cache",
    "cached_ai_call",
    "CacheKeyGenerator",
    "CacheKey",
    "CacheConfig",
    # content types
    "ANALYSIS",
    "EMBEDDING",
    "RESPONSE",
    # its parts
    "TieredLookup",
    "FillProtocol",
    "Generations",
    "CacheStats",
    "L1MemoryCache",
    "L2RedisCache",
    "CircuitBreaker",
]
