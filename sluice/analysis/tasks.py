"""Celery tasks of the analysis job: its handlers (each its own task) and session pruning."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init

from sluice.analysis import handlers  # noqa: F401 - registers analysis, embedding, security_alert
from sluice.celery import app


@worker_init.connect(weak=False)
def preload_for_the_pool(**_: Any) -> None:
    """Import what the handlers use (the database layer, the provider) in the worker's main
    process, before it forks its pool: the pool processes inherit it instead of each importing
    it at its first task. The handlers import it on first use, so that a client loading them for
    their names (``sluice analyze`` on external workers) never does; a worker always does, and
    an embedded one's two processes each spent 0.2 s on it while the run waited."""
    # Modules only: building a provider here would fail the worker's start on a provider
    # misconfiguration that each task reports (and dead-letters) clearly. What every handler
    # uses (the store, the database driver) is imported by sluice.workers.pool.
    from sluice.ai import local, providers  # noqa: F401 - imported for the fork to share
    from sluice.analysis import service  # noqa: F401


@app.task(name="sluice.prune_analysis_sessions")
def prune_analysis_sessions(older_than_days: float | None = None) -> int:
    """Delete analysis sessions (and their findings) older than the retention period (beat, daily)."""
    from sluice.analysis.service import prune_sessions  # the database layer, on first use

    return prune_sessions(older_than_days)
