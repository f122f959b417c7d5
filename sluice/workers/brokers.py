"""What each broker is asked to declare, and how the priority queues map onto it.

Redis (kombu's virtual transport) keeps one list per queue and priority step; a priority worker
listing ``critical,high,normal,low`` with ``queue_order_strategy: priority`` takes from the most
urgent non-empty queue first, so each level keeps its own queue.

RabbitMQ cannot order *across* queues: a worker's channel-wide prefetch (Celery's global QoS on
RabbitMQ) is handed to whichever blocked queue the broker happens to wake first, chosen at random,
so a CRITICAL message could wait behind any number of LOW ones. Within one queue, however, RabbitMQ
serves by message priority. On ``amqp://`` the four levels therefore share one queue,
:data:`AMQP_PRIORITY_QUEUE`, declared with ``x-max-priority`` and fed with each level's priority,
and a worker asked to consume any of ``critical,high,normal,low`` consumes that queue instead
(``celeryd_after_setup`` below). The queues are *classic*, durable: quorum queues on the RabbitMQ
versions in use (3.x) support no message priority at all, and Celery switches off global QoS for
quorum queues, which breaks its countdown/ETA handling (sluice's retries and rate-limit waits).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup, worker_init
from kombu import Connection, Queue

from sluice.errors import BackendUnavailable
from sluice.settings import redact_url
from sluice.workers.priority import (
    ALL_QUEUES,
    AMQP_PRIORITY_QUEUE,
    AMQP_SCHEMES,
    PRIORITY_QUEUES,
    is_amqp,
    physical_queue,
)

__all__ = [
    "AMQP_PRIORITY_QUEUE",
    "MAX_PRIORITY",
    "broker_queues",
    "check_broker_reachable",
    "declared_queues",
    "is_amqp",
    "physical_queue",
    "unreachable_broker",
]

log = logging.getLogger(__name__)

#: Highest message priority RabbitMQ is asked to order (sluice publishes 3..9, BATCH 0).
MAX_PRIORITY = 10


def broker_queues(broker_url: str) -> tuple[str, ...]:
    """Every queue the broker holds, most urgent first (``process-pending`` drains in this order)."""
    return tuple(dict.fromkeys(physical_queue(name, broker_url) for name in ALL_QUEUES))


def declared_queues(broker_url: str) -> list[Queue]:
    """Celery's ``task_queues`` for ``broker_url``: durable, classic, priority-ordered on AMQP."""
    if not is_amqp(broker_url):
        return [Queue(name, routing_key=name) for name in ALL_QUEUES]
    arguments = {"x-max-priority": MAX_PRIORITY, "x-queue-type": "classic"}
    return [
        Queue(name, routing_key=name, durable=True, queue_arguments=arguments)
        for name in broker_queues(broker_url)
    ]


def unreachable_broker(broker_url: str, exc: BaseException) -> BackendUnavailable:
    """The one-line error for a broker that refused or timed out, naming it without a password."""
    return BackendUnavailable(
        f"cannot reach the broker {redact_url(broker_url)}: {exc}; "
        "check SLUICE_BROKER_URL and that the broker is running"
    )


def check_broker_reachable(broker_url: str, timeout: float = 5.0) -> None:
    """One connection attempt; raise :class:`BackendUnavailable` when the broker cannot be reached.

    Used at start-up only: once running, workers wait for a restarted broker indefinitely.
    """
    connection = Connection(broker_url, connect_timeout=timeout)
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=timeout
        )
    except Exception as exc:  # kombu raises each transport's own errors
        raise unreachable_broker(broker_url, exc) from None
    finally:
        connection.release()


@worker_init.connect(weak=False)
def refuse_unreachable_broker(sender: Any = None, **_: Any) -> None:
    """A worker whose remote broker cannot be reached at start-up exits with one line.

    Celery would otherwise retry forever (``broker_connection_retry_on_startup``), and a typo in
    ``SLUICE_BROKER_URL`` would look like an idle worker.
    """
    app = getattr(sender, "app", None)
    url = str(app.conf.broker_url) if app is not None else ""
    if not url.startswith((*AMQP_SCHEMES, "redis://", "rediss://")):
        return  # the embedded broker is a folder: nothing to reach
    try:
        check_broker_reachable(url)
    except BackendUnavailable as exc:
        raise SystemExit(f"sluice worker: {exc}") from None


@celeryd_after_setup.connect(weak=False)
def consume_physical_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """On AMQP, a worker started with ``-Q critical,high,...`` consumes the shared priority queue.

    The same worker command then works on both brokers. A worker asked for only some levels gets
    all four on AMQP (one queue cannot be split by priority); that is logged once.
    """
    app = getattr(instance, "app", None)
    if app is None or not is_amqp(str(app.conf.broker_url)):
        return
    queues = app.amqp.queues
    levels = [name for name in PRIORITY_QUEUES if name in queues.consume_from]
    if not levels:
        return
    if len(levels) < len(PRIORITY_QUEUES):
        log.warning(
            "worker %s asked for %s: on RabbitMQ every level shares queue %r, consuming all of it",
            sender, ",".join(levels), AMQP_PRIORITY_QUEUE,
        )  # fmt: skip
    for name in levels:
        queues.deselect(name)
    queues.select_add(queues[AMQP_PRIORITY_QUEUE])
