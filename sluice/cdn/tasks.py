"""Celery beat tasks of the CDN side: flush purges, precompress assets, compute the edge hit ratio.

All three are idempotent and safe to overlap with themselves: the flush and the log scan hold
store locks, and compression is incremental with atomic file replacement.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from sluice.celery import app

# sluice.cdn.manager (compression, providers, the purge queue) is imported by the task that runs:
# every worker and every producer imports this module, and few of them ever run a CDN task.

#: Longest wait before retrying a rate-limited flush; the next beat run would come anyway.
MAX_RETRY_COUNTDOWN = 900


@app.task(bind=True, name="sluice.cdn.flush_invalidations", max_retries=None)
def flush_invalidations(self: Task) -> dict[str, Any]:
    """Purge the queued paths through the configured provider (beat, every ``FLUSH_INTERVAL``).

    Paths a failed purge leaves are already back in the queue; a rate-limited flush schedules a
    retry when the CDN said it may, instead of sleeping in a worker slot until the next beat.
    """
    from sluice.cdn.manager import get_cdn_manager

    manager = get_cdn_manager()
    if manager.settings.provider == "none":
        return {"skipped": "no provider configured", "pending": len(manager.invalidations)}
    result = manager.flush_invalidations()
    summary = {
        "purged": len(result.purged),
        "requeued": len(result.requeued),
        "calls": result.calls,
        "error": result.error,
        "skipped": result.skipped,
    }
    if result.retry_after is not None:
        raise self.retry(countdown=min(result.retry_after, MAX_RETRY_COUNTDOWN))
    return summary


@app.task(name="sluice.cdn.compress_static")
def compress_static() -> dict[str, Any]:
    """Precompress new or changed files in ``SLUICE_CDN_STATIC_ROOT`` (beat)."""
    from sluice.cdn.manager import get_cdn_manager

    manager = get_cdn_manager()
    if manager.settings.static_root is None:
        return {"skipped": "SLUICE_CDN_STATIC_ROOT is not set"}
    report = manager.compress_static()
    return {
        "compressed": report.compressed,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "seconds": round(report.seconds, 3),
    }


@app.task(name="sluice.cdn.update_hit_ratio")
def update_hit_ratio() -> dict[str, Any]:
    """Count new edge log lines and store ``cdn_cache_hit_ratio`` (beat)."""
    from sluice.cdn.manager import get_cdn_manager

    manager = get_cdn_manager()
    if not manager.settings.edge_logs:
        return {"skipped": "SLUICE_CDN_EDGE_LOGS is not set"}
    stats = manager.update_edge_hit_ratio()
    return {"hits": stats.hits, "misses": stats.misses, "cdn_cache_hit_ratio": stats.ratio}
