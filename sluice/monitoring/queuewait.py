"""Queue-wait telemetry: how long tasks wait before they start, the oldest waiting message, and
worker pool saturation, on any broker.

Brokers do not tell (Redis keeps no enqueue time, RabbitMQ's classic priority queues no head
timestamp), so sluice measures it itself, through Celery signals:

- ``before_task_publish`` stamps each message with the moment it becomes runnable
  (:data:`READY_HEADER`: the publish time, or its ETA when later) and ``after_task_publish`` adds
  it to the waiting set in the shared store;
- ``task_prerun`` (in the pool process that runs it) observes ``now - stamp`` into the
  ``queue_wait`` histogram and takes the message out of the waiting set;
- each worker's main process writes its busy and total slots every second under a short TTL.

The waiting set is one counter hash: field ``queue|priority|stamp_ms|task_id``, +1 when published,
-1 when started, removed when it settles at 0 (either may land first). The oldest waiting message
of a queue and priority is the smallest stamp among fields still positive. Labels are the broker
queue, the priority level and the worker pool (its queue list): bounded by configuration, never a
task id or a host name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery.signals import (
    after_task_publish,
    before_task_publish,
    task_prerun,
    task_revoked,
    worker_ready,
    worker_shutdown,
)

from sluice.monitoring import recorder
from sluice.settings import get_settings
from sluice.store import get_store
from sluice.workers.brokers import physical_queue
from sluice.workers.priority import Priority

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

#: Message header: epoch milliseconds from which the message could run (publish time or ETA).
READY_HEADER = "sluice_ready_ms"
#: Message header: the priority level label (``after_task_publish`` is not given the properties).
PRIORITY_HEADER = "sluice_wait_level"  # not workers.headers.PRIORITY: that one is the task's level
WAITING_KEY = "queuewait:waiting"
POOLS_KEY = "queuewait:pools"
#: How often a worker writes its slots, and how long the record outlives a silent worker.
POOL_REPORT_INTERVAL = 1.0
POOL_REPORT_TTL = 5.0


def priority_label(message_priority: int | None, broker_url: str) -> str:
    """The priority level a message was published with, as a label (``critical`` ... ``batch``).

    Redis messages carry the inverted value (``broker_priority``); any other number maps to the
    nearest level, so the label set stays the five levels.
    """
    if message_priority is None:
        return Priority.NORMAL.name.lower()
    value = int(message_priority)
    if broker_url.startswith(("redis://", "rediss://")):
        value = int(Priority.CRITICAL) - value
    level = min(Priority, key=lambda p: (abs(int(p) - value), -int(p)))
    return level.name.lower()


def _ready_ms(headers: Mapping[str, Any]) -> int:
    now = int(time.time() * 1000)
    eta = headers.get("eta")
    if isinstance(eta, str):
        try:
            return max(now, int(datetime.fromisoformat(eta).timestamp() * 1000))
        except ValueError:
            pass
    return now


def _field(queue: str, priority: str, ready_ms: int, task_id: str) -> str:
    return f"{queue}|{priority}|{ready_ms}|{task_id}"


@before_task_publish.connect(weak=False)
def stamp_ready_time(
    headers: dict[str, Any] | None = None, properties: Mapping[str, Any] | None = None, **_: Any
) -> None:
    """Stamp the message with when it becomes runnable and its level (every publish)."""
    if headers is not None:
        headers[READY_HEADER] = _ready_ms(headers)
        message_priority = (properties or {}).get("priority")
        headers[PRIORITY_HEADER] = priority_label(message_priority, get_settings().broker_url)


@after_task_publish.connect(weak=False)
def count_waiting(
    headers: Mapping[str, Any] | None = None, routing_key: str | None = None, **_: Any
) -> None:
    """Add the published message to the waiting set (only once the broker has it).

    Not on the embedded broker: a single ``sluice analyze`` run has no operator watching its queue
    age, and a store transaction per message would slow it down.
    """
    if not headers or READY_HEADER not in headers or not routing_key:
        return
    if get_settings().embedded_broker:
        return
    priority = str(headers.get(PRIORITY_HEADER, "normal"))
    field = _field(routing_key, priority, int(headers[READY_HEADER]), str(headers.get("id")))
    try:
        get_store().hincr_drop_zero(WAITING_KEY, field, 1)
    except Exception:  # telemetry must never fail a publish
        log.debug("could not count a waiting message", exc_info=True)


def _request_labels(request: Any) -> tuple[str, str, int] | None:
    """(queue, priority, ready_ms) of a task request, or None for a message sluice did not stamp."""
    ready = getattr(request, READY_HEADER, None)
    info = getattr(request, "delivery_info", None) or {}
    queue = info.get("routing_key")
    if ready is None or not queue:
        return None
    return str(queue), str(getattr(request, PRIORITY_HEADER, "normal")), int(ready)


@task_prerun.connect(weak=False)
def observe_start(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Record the message's wait and take it out of the waiting set."""
    labels = _request_labels(getattr(task, "request", None))
    if labels is None:
        return
    queue, priority, ready_ms = labels
    try:
        waited = max(0.0, time.time() - ready_ms / 1000)
        recorder.observe("queue_wait", waited, {"queue": queue, "priority": priority})
        get_store().hincr_drop_zero(
            WAITING_KEY, _field(queue, priority, ready_ms, str(task_id)), -1
        )
    except Exception:
        log.debug("could not record a queue wait", exc_info=True)


@task_revoked.connect(weak=False)
def forget_revoked(request: Any = None, **_: Any) -> None:
    """A revoked message will never start: it no longer waits."""
    labels = _request_labels(request)
    if labels is None:
        return
    queue, priority, ready_ms = labels
    try:
        field = _field(queue, priority, ready_ms, str(getattr(request, "id", "")))
        get_store().hincr_drop_zero(WAITING_KEY, field, -1)
    except Exception:
        log.debug("could not forget a revoked message", exc_info=True)


# -- worker pool saturation --------------------------------------------------------------------


class PoolReporter:
    """Writes one worker's ``{"busy", "slots"}`` to the store every second, under a short TTL.

    Runs in the worker's main process, where Celery tracks the requests its pool is executing.
    """

    def __init__(self, pool: str, worker: str, slots: int) -> None:
        self.pool = pool
        self.key = f"queuewait:pool:{pool}:{worker}"
        self.slots = slots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluice-pool-reporter", daemon=True)

    def start(self) -> None:
        get_store().hincr_drop_zero(POOLS_KEY, f"{self.pool}|{self.key}", 1)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            store = get_store()
            store.delete(self.key)
            store.hincr_drop_zero(POOLS_KEY, f"{self.pool}|{self.key}", -1)
        except Exception:
            log.debug("could not remove the pool report", exc_info=True)

    def report(self) -> None:
        from celery.worker import state

        busy = min(self.slots, len(state.active_requests))
        get_store().set(self.key, {"busy": busy, "slots": self.slots}, ttl=POOL_REPORT_TTL)

    def _run(self) -> None:
        while not self._stop.wait(POOL_REPORT_INTERVAL):
            try:
                self.report()
            except Exception:
                log.debug("could not report pool saturation", exc_info=True)


_reporter: PoolReporter | None = None


def pool_label(queue_names: Iterator[str] | list[str]) -> str:
    """A worker pool is named by the queues it consumes, in its own order (``critical,high,...``)."""
    return ",".join(queue_names)


@worker_ready.connect(weak=False)
def start_pool_reporter(sender: Any = None, **_: Any) -> None:
    """Start reporting this worker's slots once it consumes."""
    global _reporter
    try:
        queues = list(sender.app.amqp.queues.consume_from)
        slots = int(sender.controller.concurrency)
        _reporter = PoolReporter(pool_label(queues), str(sender.hostname), slots)
        _reporter.report()
        _reporter.start()
    except Exception:
        log.warning("pool saturation will not be reported", exc_info=True)


@worker_shutdown.connect(weak=False)
def stop_pool_reporter(**_: Any) -> None:
    if _reporter is not None:
        _reporter.stop()


# -- the read side -----------------------------------------------------------------------------


def oldest_waiting(now: float | None = None) -> dict[tuple[str, str], float]:
    """Age in seconds of the oldest waiting message per (queue, priority); 0 where none waits.

    Every level's queue on the configured broker is listed, so an empty queue reads 0 rather
    than disappearing. Empty on the embedded broker, where no waiting set is kept.
    """
    if get_settings().embedded_broker:
        return {}
    now = time.time() if now is None else now
    broker_url = get_settings().broker_url
    ages: dict[tuple[str, str], float] = {
        (physical_queue(level.queue, broker_url), level.name.lower()): 0.0 for level in Priority
    }
    for field, count in get_store().hgetall_counters(WAITING_KEY).items():
        if count <= 0:
            continue  # started before its publish was counted: settles on its own
        queue, priority, ready_ms, _ = field.split("|", 3)
        age = max(0.0, now - int(ready_ms) / 1000)
        ages[(queue, priority)] = max(ages.get((queue, priority), 0.0), age)
    return ages


def pool_saturation() -> dict[str, tuple[int, int]]:
    """(busy slots, slots) per worker pool, summed over the workers that reported recently."""
    store = get_store()
    registered = store.hgetall_counters(POOLS_KEY)
    keys = {
        field.split("|", 1)[1]: field.split("|", 1)[0] for field, n in registered.items() if n > 0
    }
    reports = store.get_many(keys)
    pools: dict[str, tuple[int, int]] = {}
    for key, pool in keys.items():
        report = reports.get(key)
        if not isinstance(report, dict):
            # The worker stopped reporting (killed): forget it so the hash does not grow.
            store.hincr_drop_zero(POOLS_KEY, f"{pool}|{key}", -registered[f"{pool}|{key}"])
            continue
        busy, slots = pools.get(pool, (0, 0))
        pools[pool] = (busy + int(report["busy"]), slots + int(report["slots"]))
    return pools


def queue_wait_metrics() -> Iterator[Metric]:
    """The oldest-message age and pool saturation gauges (the wait histogram is recorded)."""
    # Here, not at the top: every process that publishes imports this module for its signal
    # hooks, and only the exporter collects (prometheus_client costs a CLI run 15 ms to import).
    from prometheus_client.core import GaugeMetricFamily

    oldest = GaugeMetricFamily(
        "sluice_queue_oldest_message_age_seconds",
        "Age of the oldest message waiting to start, per broker queue and priority level.",
        labels=["queue", "priority"],
    )
    for (queue, priority), age in sorted(oldest_waiting().items()):
        oldest.add_metric([queue, priority], round(age, 3))
    saturation = GaugeMetricFamily(
        "sluice_worker_pool_saturation",
        "Busy slots / slots of the workers of a pool (named by the queues it consumes).",
        labels=["pool"],
    )
    busy_slots = GaugeMetricFamily(
        "sluice_worker_pool_busy_slots", "Slots executing a task, per pool.", labels=["pool"]
    )
    total_slots = GaugeMetricFamily(
        "sluice_worker_pool_slots", "Slots (pool processes) of the live workers, per pool.",
        labels=["pool"],
    )  # fmt: skip
    for pool, (busy, slots) in sorted(pool_saturation().items()):
        saturation.add_metric([pool], busy / slots if slots else 0.0)
        busy_slots.add_metric([pool], busy)
        total_slots.add_metric([pool], slots)
    yield from (oldest, saturation, busy_slots, total_slots)
