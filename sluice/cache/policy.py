"""What is cached, for how long, and what a saved call is worth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sluice.errors import InvalidInput
from sluice.pricing import DEFAULT_PRICES, cost_usd
from sluice.settings import load_cache_options

ANALYSIS, EMBEDDING, RESPONSE = "analysis", "embedding", "response"
CONTENT_TYPES = (ANALYSIS, EMBEDDING, RESPONSE)
#: The events counted per content type (cluster-wide, see :class:`sluice.store.BufferedCounters`).
EVENTS = (
    "l1_hits",
    "l2_hits",
    "misses",
    "l2_misses",
    "l2_errors",
    "corrupt",
    "sets",
    "too_large",
    "uncacheable",
    "provider_calls",
    "stampede_waits",
    "lost_writes",
    "cost_saved_micro_usd",
)


def check_content_type(content_type: str) -> str:
    if content_type not in CONTENT_TYPES:
        raise InvalidInput(
            f"unknown content type {content_type!r}; use one of {', '.join(CONTENT_TYPES)}"
        )
    return content_type


@dataclass(frozen=True)
class CacheConfig:
    """TTLs per content type (the guide's table), cacheability rules, sizes and failure handling."""

    ttl_analysis: float = 24 * 3600
    ttl_embedding: float = 7 * 24 * 3600
    ttl_response: float = 3600
    #: Chat with a higher temperature is non-deterministic and is not cached.
    max_cacheable_temperature: float = 0.3
    #: Larger encoded values are not cached (and are counted as ``too_large``).
    max_entry_bytes: int = 1 << 20
    l1_max_entries: int = 10_000
    l1_max_bytes: int = 64 << 20
    #: L1 keeps an entry at most this long, bounding staleness where invalidation cannot be pushed.
    l1_max_ttl: float = 300.0
    #: Lease of the lock that lets one process compute a missing value; renewed while it runs,
    #: so it bounds how long waiters wait for a holder that died before one takes over.
    lock_lease: float = 30.0
    #: How long a waiter waits for a store that stopped answering (it cannot tell whether the
    #: holder is alive) before computing itself, and how long a holder retries a write the store
    #: did not take. A holder that is alive is waited for as long as it renews its lease.
    stampede_wait: float = 30.0
    #: Socket timeout of L2 operations (a timeout is a slow call, not an error). After
    #: ``breaker_failures`` errors in a row, or a sustained run of extreme latencies (see
    #: :class:`~sluice.cache.breaker.CircuitBreaker`), L2 is skipped for ``breaker_reset`` seconds.
    l2_timeout: float = 0.5
    breaker_failures: int = 3
    breaker_reset: float = 5.0
    #: Local stat counters are added to the cluster-wide totals at most this often.
    stats_flush_interval: float = 1.0
    price_per_call_usd: float = 0.02
    prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def ttl_for(self, content_type: str) -> float:
        """The default TTL of ``content_type``."""
        return float(getattr(self, f"ttl_{check_content_type(content_type)}"))

    def response_cacheable(self, params: Mapping[str, Any]) -> str | None:
        """Why a model response with these parameters must not be cached, or None if it may be."""
        if params.get("stream"):
            return "streamed responses are never cached"
        n = params.get("n")
        if isinstance(n, int) and n > 1:
            return "responses with n > 1 are never cached"
        temperature = params.get("temperature")
        if isinstance(temperature, int | float) and temperature > self.max_cacheable_temperature:
            return (
                f"temperature {temperature} > {self.max_cacheable_temperature} is non-deterministic"
            )
        return None

    def cost_usd(self, model: str | None, usage: Mapping[str, Any] | None) -> float:
        """What one call cost: from its token usage and the model's price, else the per-call price."""
        price = self.prices.get(model or "")
        if price is None or not usage:
            return self.price_per_call_usd
        prompt = float(usage.get("prompt_tokens") or 0)
        completion = float(usage.get("completion_tokens") or 0)
        return cost_usd(price, prompt, completion)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CacheConfig:
        """Defaults overridden by ``SLUICE_CACHE_*`` variables (validated, named in errors)."""
        overrides = load_cache_options(env)
        if "prices" in overrides:
            overrides["prices"] = {**DEFAULT_PRICES, **overrides["prices"]}
        return replace(cls(), **overrides)
