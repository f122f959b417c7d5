"""Drain queued messages from the broker and run them here (the guide's rollback step 4).

``sluice process-pending`` uses it after ``ASYNC_PROCESSING_ENABLED=false``: every message still in a
queue is executed in the foreground, most urgent queue first, and acknowledged only once it ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from sluice.workers import headers as hdr
from sluice.workers.brokers import broker_queues
from sluice.workers.handlers import handler_task_name
from sluice.workers.loading import ensure_handlers_loaded
from sluice.workers.stats import queue_depths
from sluice.workers.submit import MICROBATCH

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    executed: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def drain(
    app: Any, progress: Callable[[int, int], None] | None = None, limit: int | None = None
) -> DrainReport:
    """Execute queued messages until the queues are empty (or ``limit`` ran)."""
    ensure_handlers_loaded()
    total = sum(queue_depths(app).values())
    report = DrainReport()
    notify = progress or (lambda done, total: None)
    notify(0, total)
    with app.connection_for_read() as connection:
        for name in broker_queues(str(app.conf.broker_url)):
            # The declared Queue (with its arguments): RabbitMQ refuses a redeclaration without.
            queue = connection.SimpleQueue(app.amqp.queues[name], no_ack=False)
            try:
                while limit is None or report.executed + report.failed < limit:
                    try:
                        message = queue.get(block=False)
                    except Empty:
                        break
                    task_name = message.headers.get("task", "")
                    task = app.tasks.get(task_name)
                    if task is None:  # not ours to run: leave it for a worker that knows it
                        message.requeue()
                        report.skipped[task_name] = report.skipped.get(task_name, 0) + 1
                        break
                    args, kwargs, _embed = message.decode()
                    if task_name == MICROBATCH:  # one buffered payload: run its handler's task
                        task = app.tasks[handler_task_name(args[0])]
                        args, kwargs = [args[1]], {}
                    sluice_headers = {
                        k: message.headers[k] for k in hdr.ALL if k in message.headers
                    }
                    outcome = task.apply(
                        args, kwargs, task_id=message.headers.get("id"), headers=sluice_headers
                    )
                    message.ack()
                    if outcome.failed():
                        report.failed += 1
                    else:
                        report.executed += 1
                    notify(
                        report.executed + report.failed, max(total, report.executed + report.failed)
                    )
            finally:
                queue.close()
    return report
