"""The Prometheus collector: every sluice metric, computed at scrape time from cluster-wide totals.

Nothing is kept in this process: each scrape reads the shared store, the broker and the workers,
so the numbers are the same whichever API replica is scraped and include every worker process.
Ratios (``ai_cache_hit_rate``) are computed from cluster-wide totals, never averaged; alert rules
should prefer ``rate()`` over the underlying counters.
A source that cannot be read is reported as ``sluice_metrics_source_up{source=...} 0`` and its
metrics are left out of that scrape, rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from sluice.cache.policy import CONTENT_TYPES
from sluice.monitoring import sources
from sluice.monitoring.consumers import consumer_metrics
from sluice.monitoring.queuewait import queue_wait_metrics
from sluice.monitoring.recorder import BUCKETS, INF, Series
from sluice.workers.stats import EVENTS as TASK_EVENTS

log = logging.getLogger(__name__)
CACHE_EVENTS = (
    "sets",
    "l2_errors",
    "corrupt",
    "too_large",
    "uncacheable",
    "provider_calls",
    "lost_writes",
)


class SluiceCollector(Collector):
    """Yields every sluice metric family; register it on a ``CollectorRegistry``."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "sluice_metrics_source_up",
            "Whether the source could be read in this scrape (1) or not (0).",
            labels=["source"],
        )
        readers: dict[str, Callable[[], Iterable[Metric]]] = {
            "tasks": _task_metrics,
            "workers": _worker_metrics,
            "ai_cache": _cache_metrics,
            "query_cache": _query_cache_metrics,
            "recorded": _recorded_metrics,
            "cdn": _cdn_metrics,
            "queue_wait": queue_wait_metrics,
            "consumers": consumer_metrics,
            "ai_admission": _admission_metrics,
        }
        for source, read in readers.items():
            try:
                families = list(read())
            except Exception as exc:
                log.warning("metrics source %s unavailable: %s", source, exc)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up


def build_registry() -> CollectorRegistry:
    """A registry holding only :class:`SluiceCollector` (no per-process default metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SluiceCollector())
    return registry


def _task_metrics() -> Iterator[Metric]:
    stats = sources.task_stats()
    tasks = CounterMetricFamily(
        "sluice_tasks", "Task events by queue, from every process.", labels=["queue", "event"]
    )
    handlers = CounterMetricFamily(
        "sluice_handler_tasks", "Task events by handler.", labels=["handler", "event"]
    )
    depth = GaugeMetricFamily(
        "sluice_queue_messages",
        "Messages waiting in a queue (every priority sub-list).",
        labels=["queue"],
    )
    guide_depth = GaugeMetricFamily(
        "async_queue_size", "Pending async tasks per queue (the guide's name).", labels=["queue"]
    )
    for queue, values in stats["by_queue"].items():
        depth.add_metric([queue], values.get("pending", 0))
        guide_depth.add_metric([queue], values.get("pending", 0))
        for event in TASK_EVENTS:
            tasks.add_metric([queue, event], values.get(event, 0))
    for handler, values in stats["by_handler"].items():
        for event in TASK_EVENTS:
            handlers.add_metric([handler, event], values.get(event, 0))
    running = GaugeMetricFamily("sluice_tasks_running", "Tasks executing right now.")
    running.add_metric([], stats["queue"]["running"])
    yield from (tasks, handlers, depth, guide_depth, running)


def _worker_metrics() -> Iterator[Metric]:
    online = GaugeMetricFamily(
        "sluice_workers_online", "Celery workers that answered a ping during this scrape."
    )
    online.add_metric([], len(sources.workers_online()))
    yield online


def _cache_metrics() -> Iterator[Metric]:
    stats = sources.cache_stats()
    hits = CounterMetricFamily(
        "sluice_ai_cache_hits", "AI cache hits by tier.", labels=["content_type", "tier"]
    )
    misses = CounterMetricFamily(
        "sluice_ai_cache_misses", "AI cache misses.", labels=["content_type"]
    )
    events = CounterMetricFamily(
        "sluice_ai_cache_events", "Other AI cache events.", labels=["content_type", "event"]
    )
    saved = CounterMetricFamily(
        "sluice_ai_cache_cost_saved_usd", "Provider cost avoided by hits.", labels=["content_type"]
    )
    for content_type in CONTENT_TYPES:
        values = stats["by_type"][content_type]
        hits.add_metric([content_type, "l1"], values["l1_hits"])
        hits.add_metric([content_type, "l2"], values["l2_hits"])
        misses.add_metric([content_type], values["misses"])
        for event in CACHE_EVENTS:
            events.add_metric([content_type, event], values[event])
        saved.add_metric([content_type], values["cost_saved_micro_usd"] / 1e6)
    rate = GaugeMetricFamily(
        "ai_cache_hit_rate", "AI cache hits / lookups since counters began, cluster-wide."
    )
    rate.add_metric([], stats["global"]["hit_rate"])
    enabled = GaugeMetricFamily("sluice_ai_cache_enabled", "CACHE_ENABLED as 1 or 0.")
    enabled.add_metric([], int(stats["enabled"]))
    yield from (hits, misses, events, saved, rate, enabled)


def _query_cache_metrics() -> Iterator[Metric]:
    stats = sources.query_cache_stats()
    # The cache reports the entries it wrote as "size"; as a counter they are sets.
    for name, key in (("hits", "hits"), ("misses", "misses"), ("sets", "size")):
        family = CounterMetricFamily(
            f"sluice_query_cache_{name}", f"Query result cache {name}, cluster-wide."
        )
        family.add_metric([], stats[key])
        yield family
    enabled = GaugeMetricFamily("sluice_query_cache_enabled", "QUERY_CACHE_ENABLED as 1 or 0.")
    enabled.add_metric([], int(stats["enabled"]))
    yield enabled


def _recorded_metrics() -> Iterator[Metric]:
    series = sources.recorded_histograms()
    counters = sources.recorded_counters()
    tasks = _histogram(
        "sluice_task_duration_seconds", "Handler execution time.", "task", series, 1.0
    )
    queries = _histogram(
        "sluice_db_query_duration_seconds", "Database statement time.", "db_query", series, 1.0
    )
    waits = _histogram(
        "sluice_queue_wait_seconds",
        "Enqueue (or ETA) to start, per broker queue and priority level.",
        "queue_wait",
        series,
        1.0,
    )
    # The guide's name, in its unit: its HighQueryLatency threshold (200) is milliseconds.
    guide = _histogram(
        "db_query_latency", "Database statement time in milliseconds.", "db_query", series, 1e3
    )
    slow = CounterMetricFamily(
        "sluice_db_slow_queries",
        "Statements over the slow-query threshold.",
        labels=["operation", "table"],
    )
    purges = CounterMetricFamily("sluice_cdn_purge_runs", "CDN invalidation flushes that ran.")
    failures = CounterMetricFamily(
        "sluice_cdn_purge_failures", "CDN invalidation flushes that failed (paths re-queued)."
    )
    paths = CounterMetricFamily("sluice_cdn_paths_purged", "Paths purged at the CDN.")
    by_name = {"cdn_purge_run": purges, "cdn_purge_failure": failures, "cdn_paths_purged": paths}
    for key, values in counters.items():
        if key.metric == "slow_query":
            labels = dict(key.labels)
            slow.add_metric([labels["operation"], labels["table"]], values["n"])
        elif key.metric in by_name:
            by_name[key.metric].add_metric([], values["n"])
    yield from (tasks, queries, waits, guide, slow, purges, failures, paths)


def _histogram(
    name: str,
    documentation: str,
    recorded: str,
    series: dict[Series, Counter[str]],
    scale: float,
) -> HistogramMetricFamily:
    """A Prometheus histogram from stored non-cumulative bucket counts, bounds times ``scale``."""
    bounds = BUCKETS[recorded]
    mine = {key: values for key, values in series.items() if key.metric == recorded}
    label_names = sorted({k for key in mine for k, _ in key.labels})
    family = HistogramMetricFamily(name, documentation, labels=label_names)
    for key, values in sorted(mine.items(), key=lambda item: item[0].labels):
        labels = dict(key.labels)
        cumulative, buckets = 0, []
        for bound in bounds:
            cumulative += values[str(bound)]
            buckets.append((_format_bound(bound * scale), cumulative))
        buckets.append((INF, cumulative + values[INF]))
        family.add_metric(
            [labels.get(n, "") for n in label_names],
            buckets,
            values["sum_us"] / 1e6 * scale,
        )
    return family


def _format_bound(value: float) -> str:
    return repr(round(value, 6))


def _cdn_metrics() -> Iterator[Metric]:
    stats = sources.cdn_stats()
    pending = GaugeMetricFamily(
        "sluice_cdn_invalidations_pending", "Paths queued for the next CDN purge."
    )
    pending.add_metric([], stats["invalidations_pending"])
    yield pending
    edge = stats["cdn_cache_hit_ratio"]
    if edge:
        requests = CounterMetricFamily(
            "sluice_cdn_edge_requests", "Edge requests seen in CDN logs.", labels=["result"]
        )
        requests.add_metric(["hit"], edge["hits"] or 0)
        requests.add_metric(["miss"], edge["misses"] or 0)
        yield requests
        if edge["ratio"] is not None:
            ratio = GaugeMetricFamily(
                "cdn_cache_hit_ratio", "Edge cache hits / cacheable requests, from edge logs."
            )
            ratio.add_metric([], edge["ratio"])
            yield ratio


def _admission_metrics() -> Iterator[Metric]:
    labels = ["provider", "model"]
    reserved = CounterMetricFamily(
        "sluice_ai_tokens_reserved",
        "Tokens reserved before AI calls (prompt + max_tokens).",
        labels=labels,
    )
    used = CounterMetricFamily(
        "sluice_ai_tokens_used", "Tokens AI calls used, as the provider reported.", labels=labels
    )
    refused = CounterMetricFamily(
        "sluice_ai_admissions_refused",
        "AI calls held back (re-queued with a countdown), by the limit that refused them.",
        labels=[*labels, "reason"],
    )
    window_tokens = GaugeMetricFamily(
        "sluice_ai_window_tokens",
        "Tokens reserved or used in the current limit window.",
        labels=labels,
    )
    budget = GaugeMetricFamily(
        "sluice_ai_budget_usd", "Spending budget per UTC day.", labels=labels
    )
    spent = GaugeMetricFamily(
        "sluice_ai_budget_used_usd", "Spent plus reserved today (UTC).", labels=labels
    )
    remaining = GaugeMetricFamily(
        "sluice_ai_budget_remaining_usd", "Budget left today (UTC).", labels=labels
    )
    paused = CounterMetricFamily(
        "sluice_ai_paused_seconds",
        "Seconds of cluster-wide pauses after a 429.",
        labels=["provider"],
    )
    rate_limited = CounterMetricFamily(
        "sluice_ai_rate_limited_responses",
        "429 (or 503 + Retry-After) answers.",
        labels=["provider"],
    )
    for provider, report in sources.ai_admission_stats().items():
        paused_ms = limited = 0
        for model, entry in report["models"].items():
            reserved.add_metric([provider, model], entry["tokens_reserved"])
            used.add_metric([provider, model], entry["tokens_used"])
            for reason, count in entry["refused"].items():
                refused.add_metric([provider, model, reason], count)
            paused_ms += entry["paused_ms"]
            limited += entry["rate_limited"]
            if "window" in entry:
                window_tokens.add_metric([provider, model], entry["window"]["tokens"])
            cap = entry.get("limits", {}).get("usd_per_day")
            if cap is not None:
                budget.add_metric([provider, model], cap)
                money = entry["budget"]
                spent.add_metric([provider, model], money["spent_usd"] + money["pending_usd"])
                remaining.add_metric([provider, model], money["remaining_usd"])
        paused.add_metric([provider], paused_ms / 1000)
        rate_limited.add_metric([provider], limited)
    yield from (
        reserved,
        used,
        refused,
        window_tokens,
        budget,
        spent,
        remaining,
        paused,
        rate_limited,
    )
