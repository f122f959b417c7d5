"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters.

Handlers and plain ``@sluice_task`` functions are Celery tasks built on :class:`SluiceTask`. Names are
loaded on first use (PEP 562), so importing one light submodule (``sluice.workers.embedded``,
``sluice.workers.priority``) does not load Celery. The handler names come through the task layer
(:mod:`sluice.workers.task`), so a handler registered through them becomes its Celery task at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.lazy import lazy_exports

if TYPE_CHECKING:
    from sluice.workers.batching import BatchResult, ChunkedBatch, submit_batch, submit_chunks
    from sluice.workers.brokers import (
        AMQP_PRIORITY_QUEUE,
        broker_queues,
        check_broker_reachable,
        declared_queues,
        physical_queue,
    )
    from sluice.workers.deadletter import DeadLetterQueue
    from sluice.workers.priority import Priority, route
    from sluice.workers.queue import AsyncTaskQueue, TaskHandle
    from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
    from sluice.workers.submit import submit_task
    from sluice.workers.task import SluiceTask, TaskHandler, registry, sluice_task

_HOMES = {
    "AMQP_PRIORITY_QUEUE": "brokers",
    "broker_queues": "brokers",
    "check_broker_reachable": "brokers",
    "declared_queues": "brokers",
    "physical_queue": "brokers",
    "AsyncTaskQueue": "queue",
    "TaskHandle": "queue",
    "TaskHandler": "task",
    "registry": "task",
    "Priority": "priority",
    "route": "priority",
    "submit_task": "submit",
    "submit_batch": "batching",
    "BatchResult": "batching",
    "submit_chunks": "batching",
    "ChunkedBatch": "batching",
    "SluiceTask": "task",
    "sluice_task": "task",
    "RateLimiter": "ratelimit",
    "define_rate_limit": "ratelimit",
    "get_rate_limit": "ratelimit",
    "DeadLetterQueue": "deadletter",
}

__all__ = [  # noqa: RUF022 - grouped by purpose, as docs/architecture.md presents them
    # the guide's queue
    "AsyncTaskQueue",
    "TaskHandler",
    "TaskHandle",
    "Priority",
    "registry",
    # submitting
    "submit_task",
    "submit_batch",
    "BatchResult",
    "submit_chunks",
    "ChunkedBatch",
    "route",
    # plain Celery tasks with sluice's features
    "SluiceTask",
    "sluice_task",
    # limits and failures
    "RateLimiter",
    "define_rate_limit",
    "get_rate_limit",
    "DeadLetterQueue",
    # brokers and their queues
    "AMQP_PRIORITY_QUEUE",
    "broker_queues",
    "check_broker_reachable",
    "declared_queues",
    "physical_queue",
]


__getattr__ = lazy_exports(__name__, _HOMES)
