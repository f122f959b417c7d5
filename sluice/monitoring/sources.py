"""Where each capability's cluster-wide numbers are read from, one function per capability.

Shared by the Prometheus collector and ``/stats``/``sluice stats``, so the two always agree. Every
function reads the shared store, the broker or the database at call time; none keeps state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy.engine import make_url

from sluice.monitoring.recorder import COUNTERS_KEY, HISTOGRAMS_KEY, Series, parse_field
from sluice.settings import get_settings
from sluice.store import get_store

#: How long a scrape or health check waits for workers to answer a ping.
PING_TIMEOUT = 0.5


def cache_stats() -> dict[str, Any]:
    """The AI result cache's stats (the guide's shape), cluster-wide."""
    from sluice.cache import get_ai_cache

    return get_ai_cache().get_stats()


def task_stats() -> dict[str, Any]:
    """Task counters and queue depths (every priority sub-list counted), cluster-wide."""
    from sluice.celery import app
    from sluice.workers.stats import snapshot

    return snapshot(app)


#: How long one ping's answer serves every scrape and health check of this process.
PING_CACHE_SECONDS = 2.0


class _PingCache:
    def __init__(self) -> None:
        self.answer: list[str] | None = None
        self.at = -math.inf
        self.in_flight = threading.Lock()  # held by the one thread pinging


_ping = _PingCache()
_ping_lock = threading.Lock()


def workers_online(timeout: float = PING_TIMEOUT) -> list[str]:
    """Names of the Celery workers that answered a ping within ``timeout`` seconds.

    One ping at a time per process, its answer shared for :data:`PING_CACHE_SECONDS`: a crowd of
    scrapes and health checks costs one ping, not one each. The ping runs on a connection of its
    own: Celery's would hold a pooled connection while waiting for the producer pool, and enough
    concurrent pings then wait on each other forever.
    """
    with _ping_lock:  # the lock only guards the cache; it is never held across the ping
        fresh = _ping.answer if time.monotonic() - _ping.at < PING_CACHE_SECONDS else None
    if fresh is not None:
        return fresh
    if not _ping.in_flight.acquire(timeout=timeout + PING_TIMEOUT):
        raise TimeoutError(
            f"another worker ping did not finish within {timeout + PING_TIMEOUT:g} s"
        )
    try:
        with _ping_lock:
            if time.monotonic() - _ping.at < PING_CACHE_SECONDS and _ping.answer is not None:
                return _ping.answer  # pinged by the thread this one waited for
        from sluice.celery import app

        with app.connection_for_write() as connection:
            replies = app.control.ping(timeout=timeout, connection=connection) or []
        names = sorted(name for reply in replies for name in reply)
        with _ping_lock:
            _ping.answer, _ping.at = names, time.monotonic()
        return names
    finally:
        _ping.in_flight.release()


def query_cache_stats() -> dict[str, Any]:
    """Hits, misses and sets of the query result cache for the configured database."""
    from sluice.query.optimizer import database_namespace
    from sluice.query.result_cache import QueryResultCache

    settings = get_settings()
    namespace = database_namespace(make_url(settings.database_url))
    stats = QueryResultCache(get_store(), namespace).stats()
    stats.pop("local_entries", None)  # this process's LRU: meaningless for the cluster
    stats["enabled"] = settings.query_cache_enabled
    return stats


def cdn_stats() -> dict[str, Any]:
    """Edge hit ratio (last computed by the beat task), pending purges and purge outcomes."""
    from sluice.cdn import get_cdn_manager, read_edge_hit_ratio

    manager = get_cdn_manager()
    purges = recorded_counters()
    return {
        "cdn_cache_hit_ratio": read_edge_hit_ratio(manager.store),
        "invalidations_pending": len(manager.invalidations),
        "purge_runs": _total(purges, "cdn_purge_run"),
        "purge_failures": _total(purges, "cdn_purge_failure"),
        "paths_purged": _total(purges, "cdn_paths_purged"),
        "compression_enabled": get_settings().cdn_compression_enabled,
    }


def ai_admission_stats() -> dict[str, Any]:
    """AI admission control per provider: limits, window and budget usage, refusals, pauses."""
    from sluice.ai import admission_for
    from sluice.settings import LIMITED_AI_PROVIDERS

    return {provider: admission_for(provider).report() for provider in sorted(LIMITED_AI_PROVIDERS)}


def recorded_histograms() -> dict[Series, Counter[str]]:
    """Every histogram series recorded by any process: bucket/``count``/``sum_us`` -> total."""
    return _series(get_store().hgetall_counters(HISTOGRAMS_KEY))


def recorded_counters() -> dict[Series, Counter[str]]:
    """Every plain counter series recorded by any process (event ``n``)."""
    return _series(get_store().hgetall_counters(COUNTERS_KEY))


def _series(fields: dict[str, int]) -> dict[Series, Counter[str]]:
    series: dict[Series, Counter[str]] = {}
    for field, value in fields.items():
        key, event = parse_field(field)
        series.setdefault(key, Counter())[event] += value
    return series


def _total(series: dict[Series, Counter[str]], metric: str) -> int:
    return sum(values["n"] for key, values in series.items() if key.metric == metric)
