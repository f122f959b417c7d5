"""Celery tasks of the analysis job: its handlers (each its own task) and session pruning."""

from __future__ import annotations

from sluice.analysis import handlers  # noqa: F401 - registers analysis, embedding, security_alert
from sluice.celery import app


@app.task(name="sluice.prune_analysis_sessions")
def prune_analysis_sessions(older_than_days: float | None = None) -> int:
    """Delete analysis sessions (and their findings) older than the retention period (beat, daily)."""
    from sluice.analysis.service import prune_sessions  # the database layer, on first use

    return prune_sessions(older_than_days)
