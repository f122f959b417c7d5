"""Priorities, the queues they map to, and how a task is routed.

Each priority has its own queue. On Redis, workers listen with ``queue_order_strategy: priority``
and prefetch 1, so a worker always takes from the most urgent non-empty queue first.
"""

from __future__ import annotations

import functools
from enum import IntEnum

from sluice.errors import InvalidInput
from sluice.settings import get_settings


class Priority(IntEnum):
    """The guide's five priority levels; a larger value is more urgent."""

    BATCH = 0
    LOW = 3
    NORMAL = 5
    HIGH = 7
    CRITICAL = 9

    @property
    def queue(self) -> str:
        """The Celery queue that carries tasks of this priority."""
        return _QUEUES[self]

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """Accept a member, its name (any case) or its value; raise :class:`InvalidInput` otherwise."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(p.name for p in cls)
        raise InvalidInput(f"unknown priority {value!r}; use one of {names}")


_QUEUES = {level: level.name.lower() for level in Priority}
#: Queues in the order a priority worker drains them (most urgent first).
PRIORITY_QUEUES: tuple[str, ...] = ("critical", "high", "normal", "low")
#: Every queue sluice declares.
ALL_QUEUES: tuple[str, ...] = (*PRIORITY_QUEUES, "batch")
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
#: The one RabbitMQ queue that carries CRITICAL, HIGH, NORMAL and LOW (by message priority);
#: why, in :mod:`sluice.workers.brokers`.
AMQP_PRIORITY_QUEUE = "priority"


def is_amqp(broker_url: str) -> bool:
    """Whether ``broker_url`` is a RabbitMQ (AMQP 0-9-1) broker."""
    return broker_url.startswith(AMQP_SCHEMES)


def physical_queue(queue: str, broker_url: str) -> str:
    """The broker queue that carries the messages of sluice queue ``queue``."""
    if is_amqp(broker_url) and queue in PRIORITY_QUEUES:
        return AMQP_PRIORITY_QUEUE
    return queue


def broker_priority(level: Priority) -> int:
    """The message priority to publish ``level`` with, in the broker's own convention.

    AMQP serves higher numbers first. kombu's Redis transport serves *lower* numbers first, and
    its BRPOP lists every queue's priority-0 list before any queue's priority-3 list, so the
    message priority outranks the queue order: published as-is, CRITICAL (9) would be taken after
    LOW (3). On Redis the value is therefore inverted (CRITICAL and HIGH share the first step and
    keep the queue order between them, then NORMAL, LOW, and BATCH last).
    """
    if get_settings().broker_url.startswith(("redis://", "rediss://")):
        return int(Priority.CRITICAL) - int(level)
    return int(level)


def route(priority: Priority | str | int) -> dict[str, object]:
    """``apply_async`` options that send a task to the queue of ``priority``.

    On RabbitMQ the four priority levels share one queue (see :mod:`sluice.workers.brokers`).
    """
    level = Priority.parse(priority)
    return dict(_routes(get_settings().broker_url)[level])


@functools.cache
def _routes(broker_url: str) -> dict[Priority, dict[str, object]]:
    # Worked out once per broker: route() is on the path of every submission.
    # On RabbitMQ the four priority levels share one queue (see sluice.workers.brokers).
    return {
        level: {
            "queue": physical_queue(level.queue, broker_url),
            "priority": broker_priority(level),
        }
        for level in Priority
    }
