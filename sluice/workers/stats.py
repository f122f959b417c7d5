"""Cluster-wide task counters and queue depths (the guide's ``queue.get_stats()``).

Counters are buffered per process and summed in the shared store, so every producer and worker
process contributes. Queue depth comes from the broker itself: on Redis it sums every priority
sub-list of a queue (``queue``, ``queue\\x06\\x163``, ...), which exporters that LLEN only the base list
miss.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from sluice.store import BufferedCounters, get_store
from sluice.workers.brokers import broker_queues
from sluice.workers.priority import ALL_QUEUES

log = logging.getLogger(__name__)
STATS_KEY = "workers:stats"
EVENTS = (
    "submitted",
    "completed",
    "failed",
    "retries",
    "batches_processed",
    "rate_limited",
    "dead_lettered",
)


@functools.cache
def _counters(pid: int) -> BufferedCounters:
    return BufferedCounters.in_hash(get_store, STATS_KEY)


def counters() -> BufferedCounters:
    """This process's buffer (one per pid, so a forked worker child starts empty)."""
    return _counters(os.getpid())


def record(event: str, queue: str, handler: str, amount: int = 1) -> None:
    """Count ``event`` globally, for its queue and for its handler."""
    counters().add(*((field, amount) for field in _fields(event, queue, handler)))


@functools.lru_cache(maxsize=4096)
def _fields(event: str, queue: str, handler: str) -> tuple[str, str, str]:
    # Recorded on every submission and every run: the field names are built once per process.
    return f"all:{event}", f"queue:{queue}:{event}", f"handler:{handler}:{event}"


def adjust_running(delta: int) -> None:
    counters().add(("all:running", delta))


def queue_depths(app: Any) -> dict[str, int]:
    """Messages waiting in each broker queue, read from the broker (every priority level included).

    On RabbitMQ the priority levels share one queue (:mod:`sluice.workers.brokers`), reported
    under its own name.
    """
    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in broker_queues(str(app.conf.broker_url)):
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception as exc:  # a queue never declared yet counts as empty
                log.debug("queue %s has no depth yet: %s", name, exc)
                depths[name] = 0
    return depths


def snapshot(app: Any) -> dict[str, Any]:
    """The guide's stats shape, plus per-queue and per-handler breakdowns."""
    totals, cluster_wide = counters().totals()
    depths = queue_depths(app)
    completed, failed = totals["all:completed"], totals["all:failed"]
    by_queue: dict[str, dict[str, int]] = {
        name: {"pending": depths.get(name, 0)} for name in dict.fromkeys((*ALL_QUEUES, *depths))
    }
    by_handler: dict[str, dict[str, int]] = {}
    for field, value in totals.items():
        scope, _, event = field.rpartition(":")
        kind, _, name = scope.partition(":")
        if kind == "queue":
            by_queue.setdefault(name, {"pending": 0})[event] = value
        elif kind == "handler":
            by_handler.setdefault(name, {})[event] = value
    return {
        "submitted": totals["all:submitted"],
        "completed": completed,
        "failed": failed,
        "retries": totals["all:retries"],
        "batches_processed": totals["all:batches_processed"],
        "rate_limited": totals["all:rate_limited"],
        "dead_lettered": totals["all:dead_lettered"],
        "success_rate": completed / (completed + failed) if completed + failed else 1.0,
        "queue": {"pending": sum(depths.values()), "running": max(0, totals["all:running"])},
        "by_queue": by_queue,
        "by_handler": by_handler,
        "cluster_wide": cluster_wide,
    }
