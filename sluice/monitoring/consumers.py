"""The consumer watchdog's reports as a health check and a metric (the watchdog runs in workers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from sluice.workers.watchdog import read_reports


def check_consumers() -> str:
    """Fails while any worker reports a queue it no longer receives from."""
    reports = read_reports()
    stalled = [f"{r['worker']} ({','.join(r['stalled'])})" for r in reports if r.get("stalled")]
    if stalled:
        raise ConnectionError(f"stalled consumers: {'; '.join(sorted(stalled))}")
    return f"{len(reports)} workers consuming from every queue"


def consumer_metrics() -> Iterator[Metric]:
    """``sluice_worker_consumer_stalled{pool,queue}``: workers that report that queue stalled."""
    stalled = GaugeMetricFamily(
        "sluice_worker_consumer_stalled",
        "Workers whose watchdog finds they no longer receive from a queue they consume.",
        labels=["pool", "queue"],
    )
    watched = GaugeMetricFamily(
        "sluice_worker_consumers_watched", "Workers reporting to the consumer watchdog, per pool.",
        labels=["pool"],
    )  # fmt: skip
    counts: Counter[tuple[str, str]] = Counter()
    pools: Counter[str] = Counter()
    for report in read_reports():
        pool = str(report["pool"])
        pools[pool] += 1
        for queue in pool.split(","):
            counts[(pool, queue)] += queue in report.get("stalled", [])
    for (pool, queue), count in sorted(counts.items()):
        stalled.add_metric([pool, queue], count)
    for pool, count in sorted(pools.items()):
        watched.add_metric([pool], count)
    yield from (stalled, watched)
