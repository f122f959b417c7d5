"""Quantiles of recorded histograms, estimated the way PromQL's ``histogram_quantile`` does."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sluice.monitoring.recorder import BUCKETS, INF, Series


def quantile(q: float, bounds: tuple[float, ...], counts: Counter[str]) -> float | None:
    """Linear interpolation inside the bucket holding rank ``q * count``; None when empty.

    An observation past the last bound is reported as that bound, as Prometheus does.
    """
    total = sum(counts[str(b)] for b in bounds) + counts[INF]
    if not total:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for bound in bounds:
        in_bucket = counts[str(bound)]
        if below + in_bucket >= rank and in_bucket:
            return lower + (bound - lower) * (rank - below) / in_bucket
        below, lower = below + in_bucket, bound
    return bounds[-1]


def latency_summary(series: dict[Series, Counter[str]]) -> dict[str, Any]:
    """Cluster-wide statement count, mean and p50/p95/p99 in milliseconds, over all tables."""
    merged: Counter[str] = Counter()
    for key, values in series.items():
        if key.metric == "db_query":
            merged.update(values)
    count = merged["count"]
    bounds = BUCKETS["db_query"]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1e3, 3)

    return {
        "statements": count,
        "mean_ms": ms(merged["sum_us"] / 1e6 / count) if count else None,
        "p50_ms": ms(quantile(0.5, bounds, merged)),
        "p95_ms": ms(quantile(0.95, bounds, merged)),
        "p99_ms": ms(quantile(0.99, bounds, merged)),
    }
