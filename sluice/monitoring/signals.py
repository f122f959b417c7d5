"""Celery signal receivers: task durations, CDN purge outcomes, a last metrics flush, worker logs.

Imported by every worker through the Celery app's ``include`` list (``sluice.monitoring.signals``),
so no CDN or worker module has to know about metrics. Receivers are connected on import, once.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from celery import states
from celery.signals import after_setup_logger, task_postrun, task_prerun, worker_process_shutdown

from sluice.monitoring import recorder
from sluice.monitoring.logs import configure_handlers
from sluice.store.counters import flush_all

log = logging.getLogger(__name__)
CDN_FLUSH_TASK = "sluice.cdn.flush_invalidations"
#: Start time and labels (as ``(key, value)`` pairs) of each running sluice task, by task id.
_running: dict[str, tuple[float, tuple[tuple[str, str], ...]]] = {}


@task_prerun.connect(weak=False)
def start_task_clock(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    """Note when a sluice task (one with ``metric_labels``: handlers, ``@sluice_task``) starts."""
    labels = getattr(sender, "metric_labels", None)
    if labels is None or task_id is None:
        return
    try:
        _running[task_id] = (time.perf_counter(), tuple(labels().items()))
    except Exception:  # metrics must never fail the task they measure
        log.debug("could not label task %s", task_id, exc_info=True)


@task_postrun.connect(weak=False)
def observe_task_run(
    sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any
) -> None:
    """One execution of a sluice task: its duration, labelled with its outcome.

    A run that re-published itself for later (no rate-limit token, ``RetryLater``) is not an
    execution; a run that raised (and is retried) counts as a failure.
    """
    started = _running.pop(task_id, None) if task_id else None
    if started is None or state == states.IGNORED:
        return
    began, labels = started
    outcome = "success" if state == states.SUCCESS else "failure"
    try:
        recorder.observe_series("task", _task_series(labels, outcome), time.perf_counter() - began)
    except Exception:
        log.debug("could not record task metrics", exc_info=True)


@functools.lru_cache(maxsize=4096)
def _task_series(labels: tuple[tuple[str, str], ...], outcome: str) -> str:
    # Every run records one: label sets repeat (queue x handler x outcome), so each is encoded once.
    return recorder.scope("task", {**dict(labels), "outcome": outcome})


@task_postrun.connect(weak=False)
def count_cdn_flush(
    sender: Any = None, retval: Any = None, state: str | None = None, **_: Any
) -> None:
    """Count a CDN invalidation flush, failed when it returned an error or did not succeed."""
    if getattr(sender, "name", None) != CDN_FLUSH_TASK:
        return
    summary = retval if isinstance(retval, dict) else {}
    if summary.get("skipped"):
        return  # no provider configured, or another process was flushing: nothing was tried
    recorder.count("cdn_purge_run", {})
    recorder.count("cdn_paths_purged", {}, int(summary.get("purged") or 0))
    if state != states.SUCCESS or summary.get("error"):
        recorder.count("cdn_purge_failure", {})
        log.warning("CDN purge flush failed (state %s): %s", state, summary.get("error"))


@worker_process_shutdown.connect(weak=False)
def flush_on_exit(**_: Any) -> None:
    """Pool processes may leave through ``os._exit`` (no atexit): flush their last counts here."""
    flush_all()


@after_setup_logger.connect(weak=False)
def setup_worker_logging(logger: logging.Logger | None = None, **_: Any) -> None:
    """Apply ``SLUICE_LOG_FORMAT`` and secret redaction to the handlers Celery just set up."""
    if logger is not None:
        configure_handlers(logger.handlers)
