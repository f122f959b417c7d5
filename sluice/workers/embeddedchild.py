"""Loaded by the embedded worker (``--include``): how its pool children leave when it is stopped.

:class:`sluice.workers.embedded.EmbeddedWorker` stops a worker by SIGTERM to each pool child, then
SIGKILL to the whole group. A child flushes its buffered counters and exits at once on SIGTERM (a task
it was running is abandoned: its transaction never commits and its message goes back to the queue),
and dies with the worker process if that is killed first.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import worker_process_init

from sluice.store.counters import flush_all
from sluice.workers.embedded import die_with_parent


def _flush_and_exit(signum: int, frame: Any) -> None:
    try:
        flush_all()
    finally:
        os._exit(0)


@worker_process_init.connect(weak=False)
def install_exit_handler(**_: Any) -> None:
    """Replace the pool child's default SIGTERM (death without a flush) with flush-then-exit."""
    signal.signal(signal.SIGTERM, _flush_and_exit)
    die_with_parent(signal.SIGTERM)
