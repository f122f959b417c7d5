"""Consumer watchdog: each worker proves it still receives from each queue it consumes.

A worker can stay "online" (answering pings through another connection, its pool alive) while its
consumer no longer receives anything: a broker reconnect that did not re-register a consumer, a
connection black-holed by the network. The watchdog, a thread in the worker's main process,
notes every delivery per queue (``task_received``). When a queue has delivered nothing for one
interval while the worker has a free slot, it publishes a canary task to that queue over a fresh
connection; any delivery proves consumption (another worker may take the canary: its own
canaries and tasks reach this one in turn). After :data:`STALL_INTERVALS` intervals with canaries
published and nothing received, the queue is stalled: the worker reports it in the shared store
(``/health`` and ``sluice_worker_consumer_stalled`` read it) and recycles itself with a hard
restart: its pool is killed and the same command executed again (same pid, new connections).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import task_received, worker_ready, worker_shutdown

from sluice.settings import get_settings
from sluice.store import get_store

log = logging.getLogger(__name__)

CANARY_TASK = "sluice.watchdog_canary"
#: Intervals without a delivery (canaries published meanwhile) before a queue counts as stalled.
STALL_INTERVALS = 3
REPORTS_KEY = "watchdog:workers"


@shared_task(name=CANARY_TASK, ignore_result=True)
def canary() -> None:
    """Does nothing: being delivered is the proof."""


class ConsumerWatchdog:
    """Watches one worker's queues; see the module docstring."""

    def __init__(
        self,
        app: Any,
        worker: str,
        queues: list[str],
        slots: int,
        interval: float,
        consuming: Callable[[], set[str]] | None = None,
    ) -> None:
        self.app = app
        # The queues the consumer listens to now: an operator's `celery control cancel_consumer`
        # stops deliveries on purpose, and a paused queue is not a stalled one.
        self.consuming = consuming or (lambda: set(self.queues))
        self.worker = worker
        self.queues = list(queues)
        self.slots = slots
        self.interval = interval
        self.pool = ",".join(self.queues)
        self.key = f"watchdog:report:{worker}"
        now = time.monotonic()
        self.last_delivery = {queue: now for queue in self.queues}
        self.canaries_since = {queue: 0 for queue in self.queues}
        self.stalled_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluice-watchdog", daemon=True)

    def start(self) -> None:
        get_store().hincr_drop_zero(REPORTS_KEY, self.key, 1)
        self._report([])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.stalled_at is None:  # a stalled report stays until its TTL: the next one clears it
            try:
                get_store().delete(self.key)
                get_store().hincr_drop_zero(REPORTS_KEY, self.key, -1)
            except Exception:
                log.debug("could not remove the watchdog report", exc_info=True)

    def delivered(self, queue: str) -> None:
        """A message from ``queue`` reached this worker."""
        if queue in self.last_delivery:
            self.last_delivery[queue] = time.monotonic()
            self.canaries_since[queue] = 0

    def check(self) -> list[str]:
        """One round: publish canaries where needed; return the stalled queues.

        The consumer is stalled only when every queue it consumes is: a canary sent to a queue that
        other workers share may be taken by one of them while this worker is busy (with messages
        held for a countdown, say), so one quiet queue beside others that deliver proves nothing,
        and recycling on it would drop the held messages until the visibility timeout.
        """
        from celery.worker import state

        now = time.monotonic()
        free = len(state.active_requests) < self.slots
        consuming = self.consuming()
        stalled = []
        watched = 0
        for queue in self.queues:
            if queue not in consuming:  # paused: its clock starts again when it is resumed
                self.last_delivery[queue] = now
                self.canaries_since[queue] = 0
                continue
            watched += 1
            quiet = now - self.last_delivery[queue]
            if quiet < self.interval:
                continue
            if (
                self.canaries_since[queue] >= STALL_INTERVALS - 1
                and quiet >= STALL_INTERVALS * self.interval
            ):
                stalled.append(queue)
            if free:
                self._publish_canary(queue)
        return stalled if watched and len(stalled) == watched else []

    def _publish_canary(self, queue: str) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=self.interval)
                canary.apply_async(
                    queue=self.app.amqp.queues[queue], expires=STALL_INTERVALS * self.interval,
                    connection=connection, retry=False,
                )  # fmt: skip
            self.canaries_since[queue] += 1
        except Exception as exc:  # the broker itself is down: not this consumer's fault
            log.info("watchdog could not publish a canary to %s: %s", queue, exc)

    def _report(self, stalled: list[str]) -> None:
        report = {"worker": self.worker, "pool": self.pool, "stalled": stalled, "at": time.time()}
        get_store().set(self.key, report, ttl=max(STALL_INTERVALS * self.interval, 10.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                stalled = self.check()
                self._report(stalled)
            except Exception:
                log.warning("watchdog round failed", exc_info=True)
                continue
            if stalled:
                log.error(
                    "consumer stalled on %s: nothing received for %d intervals of %gs; recycling",
                    ",".join(stalled), STALL_INTERVALS, self.interval,
                )  # fmt: skip
                self.stalled_at = time.monotonic()
                restart()


def restart() -> None:
    """Kill this worker's pool processes and execute the same command again (same pid).

    Not a warm shutdown: closing a connection whose peer never answers can hang, and the running
    tasks' acknowledgements could not reach the broker anyway. Their messages go back to the queue
    when the broker sees the old connections close (acks late), and run again.
    """
    from celery import platforms

    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = stat.read().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if parent == me:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
    platforms.close_open_fds([sys.__stdin__, sys.__stdout__, sys.__stderr__])
    # orig_argv keeps ``-m celery``; sys.argv would name celery/__main__.py, which cannot run alone.
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - our own command


def read_reports() -> list[dict[str, Any]]:
    """The live watchdog reports of every worker (``worker``, ``pool``, ``stalled``, ``at``)."""
    store = get_store()
    keys = [key for key, count in store.hgetall_counters(REPORTS_KEY).items() if count > 0]
    values = store.get_many(keys)
    reports = []
    for key in keys:
        report = values.get(key)
        if isinstance(report, dict):
            reports.append(report)
        else:  # expired: the worker is gone (or recycled under a new report)
            store.hincr_drop_zero(REPORTS_KEY, key, -1)
    return reports


_watchdog: ConsumerWatchdog | None = None


@worker_ready.connect(weak=False)
def start_watchdog(sender: Any = None, **_: Any) -> None:
    """Start watching once a ``celery worker`` process consumes from a networked broker.

    Not in a worker running in another program's threads (``AsyncTaskQueue.start``): restarting
    would execute that program again. Not on the embedded broker, a local folder.
    """
    from celery.apps.worker import Worker

    global _watchdog
    if (
        not isinstance(getattr(sender, "controller", None), Worker)
        or get_settings().embedded_broker
    ):
        return
    try:
        queues = list(sender.app.amqp.queues.consume_from)
        _watchdog = ConsumerWatchdog(
            sender.app, str(sender.hostname), queues, int(sender.controller.concurrency),
            get_settings().watchdog_interval, consuming=lambda: _consumed_queues(sender),
        )  # fmt: skip
        _watchdog.start()
    except Exception:
        log.warning("the consumer watchdog could not start", exc_info=True)


def _consumed_queues(consumer: Any) -> set[str]:
    """Names of the queues ``consumer`` listens to now (after any add/cancel_consumer)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    return {queue.name for queue in getattr(task_consumer, "queues", None) or ()}


@task_received.connect(weak=False)
def note_delivery(request: Any = None, **_: Any) -> None:
    if _watchdog is not None and request is not None:
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        if queue:
            _watchdog.delivered(str(queue))


@worker_shutdown.connect(weak=False)
def stop_watchdog(**_: Any) -> None:
    if _watchdog is not None:
        _watchdog.stop()
