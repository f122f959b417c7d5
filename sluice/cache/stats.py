"""The cache's counters: cluster-wide through the store, reported in the guide's stats shape."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sluice.cache.breaker import CircuitBreaker
from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import L1MemoryCache
from sluice.cache.policy import CONTENT_TYPES, EVENTS
from sluice.errors import BackendUnavailable
from sluice.store import BufferedCounters


class CacheStats:
    """Per-content-type event counts (see :data:`~sluice.cache.policy.EVENTS`), summed cluster-wide.

    Counting is local (no round trip per hit); buffers are added to one hash in the store at most
    every ``flush_interval`` seconds, through the L2 breaker.
    """

    def __init__(self, l2: L2RedisCache, flush_interval: float) -> None:
        self._l2 = l2
        self.counters = BufferedCounters(self._flush, l2.read_stats, flush_interval)
        l2.stats = self.counters
        # Field names made once: every hit and miss counts, so formatting them would show.
        self._fields = {(ct, e): f"{ct}:{e}" for ct in CONTENT_TYPES for e in EVENTS}
        self._hit_fields = {
            (ct, tier): (f"{ct}:{tier}", f"{ct}:cost_saved_micro_usd")
            for ct in CONTENT_TYPES
            for tier in ("l1_hits", "l2_hits")
        }

    def incr(self, content_type: str, event: str, amount: int = 1) -> None:
        self.counters.incr(content_type, event, amount)

    def hit(self, content_type: str, tier: str, cost: float) -> None:
        """One hit in ``tier`` (``l1_hits`` or ``l2_hits``) that saved a call costing ``cost``."""
        hits, saved = self._hit_fields[content_type, tier]
        self.counters.add_two(hits, 1, saved, round(cost * 1e6))

    def miss(self, content_type: str) -> None:
        fields = self._fields
        self.counters.add_two(
            fields[content_type, "l2_misses"], 1, fields[content_type, "misses"], 1
        )

    def flush(self) -> None:
        self.counters.flush()

    def report(self, enabled: bool, l1: L1MemoryCache, breaker: CircuitBreaker) -> dict[str, Any]:
        """The guide's stats shape, with cluster-wide counters, plus a breakdown by content type."""
        if enabled:
            totals, shared = self.counters.totals()
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
            "enabled": enabled,
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
                "size": len(l1),
                "memory_usage_bytes": l1.memory_usage_bytes,
                "hits": l1_hits,
            },
            "l2": {
                "hits": l2_hits,
                "misses": sum(t["l2_misses"] for t in by_type.values()),
                "errors": l2_errors,
                "lost_writes": sum(t["lost_writes"] for t in by_type.values()),
                "circuit": breaker.state,
            },
            "by_type": by_type,
            "cluster_wide": shared,
        }

    def _flush(self, batch: dict[str, int]) -> None:
        if not self._l2.usable():
            raise BackendUnavailable("L2 circuit open")
        self._l2.add_stats(batch)
