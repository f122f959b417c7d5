"""Celery tasks of the analysis job."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from sluice.analysis.service import analyze_source
from sluice.celery import app
from sluice.errors import BackendUnavailable, ProviderError

#: Transient failures worth another attempt; anything else is a bug or bad input and fails at once.
RETRYABLE = (BackendUnavailable, ProviderError, OperationalError, ConnectionError, TimeoutError)


@app.task(
    bind=True,
    name="sluice.analyze_file",
    autoretry_for=RETRYABLE,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def analyze_file(
    self: Task,
    session_id: int,
    path: str,
    content: str,
    language: str,
    rules: list[str] | None = None,
) -> dict[str, Any]:
    """Analyse one file of an analysis session and store its findings (idempotent)."""
    return analyze_source(session_id, path, content, language, rules)


@app.task(name="sluice.prune_analysis_sessions")
def prune_analysis_sessions(older_than_days: float | None = None) -> int:
    """Delete analysis sessions (and their findings) older than the retention period (beat, daily)."""
    from sluice.analysis.service import prune_sessions

    return prune_sessions(older_than_days)
