"""Every capability's stats in one JSON-ready dict (``/stats`` and ``sluice stats``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.monitoring import sources
from sluice.monitoring.quantiles import latency_summary

SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "cache": sources.cache_stats,
    "queue": sources.task_stats,
    "query": lambda: {
        "cache_stats": sources.query_cache_stats(),
        "latency": latency_summary(sources.recorded_histograms()),
    },
    "cdn": sources.cdn_stats,
    "ai_admission": sources.ai_admission_stats,
}


def collect_stats() -> dict[str, Any]:
    """``{section: stats}``; a section that cannot be read holds ``{"error": ...}`` instead."""
    report: dict[str, Any] = {}
    for name, read in SECTIONS.items():
        try:
            report[name] = read()
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return report
