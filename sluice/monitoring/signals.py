"""Celery signal receivers: CDN purge outcomes, a last metrics flush, and worker log setup.

Imported by every worker through the Celery app's ``include`` list (``sluice.monitoring.signals``),
so no CDN or worker module has to know about metrics. Receivers are connected on import, once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.signals import after_setup_logger, task_postrun, worker_process_shutdown

from sluice.monitoring import recorder
from sluice.monitoring.logs import configure_handlers
from sluice.store.counters import flush_all

log = logging.getLogger(__name__)
CDN_FLUSH_TASK = "sluice.cdn.flush_invalidations"


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
