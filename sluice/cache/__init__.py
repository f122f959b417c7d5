"""AI result cache (guide section 1): L1 memory over the shared store, stampede-proof, fail-open."""

from sluice.cache.ai_cache import AIResultCache, SyncAIResultCache, get_ai_cache, reset_ai_cache
from sluice.cache.breaker import CircuitBreaker
from sluice.cache.decorators import cached_ai_call
from sluice.cache.keys import CacheKey, CacheKeyGenerator
from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import MISSING, L1MemoryCache
from sluice.cache.policy import ANALYSIS, CONTENT_TYPES, EMBEDDING, RESPONSE, CacheConfig

__all__ = [
    "ANALYSIS",
    "CONTENT_TYPES",
    "EMBEDDING",
    "MISSING",
    "RESPONSE",
    "AIResultCache",
    "CacheConfig",
    "CacheKey",
    "CacheKeyGenerator",
    "CircuitBreaker",
    "L1MemoryCache",
    "L2RedisCache",
    "SyncAIResultCache",
    "cached_ai_call",
    "get_ai_cache",
    "reset_ai_cache",
]
