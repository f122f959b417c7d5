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

from celery.signals import celeryd_after_setup
from kombu import Queue

from sluice.workers.priority import ALL_QUEUES, PRIORITY_QUEUES

log = logging.getLogger(__name__)

AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
#: The one RabbitMQ queue that carries CRITICAL, HIGH, NORMAL and LOW (by message priority).
AMQP_PRIORITY_QUEUE = "priority"
#: Highest message priority RabbitMQ is asked to order (sluice publishes 3..9, BATCH 0).
MAX_PRIORITY = 10


def is_amqp(broker_url: str) -> bool:
    """Whether ``broker_url`` is a RabbitMQ (AMQP 0-9-1) broker."""
    return broker_url.startswith(AMQP_SCHEMES)


def physical_queue(queue: str, broker_url: str) -> str:
    """The broker queue that carries the messages of sluice queue ``queue``."""
    if is_amqp(broker_url) and queue in PRIORITY_QUEUES:
        return AMQP_PRIORITY_QUEUE
    return queue


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
