"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters."""

from sluice.workers.batching import BatchResult, submit_batch
from sluice.workers.brokers import (
    AMQP_PRIORITY_QUEUE,
    broker_queues,
    check_broker_reachable,
    declared_queues,
    physical_queue,
)
from sluice.workers.deadletter import DeadLetterQueue
from sluice.workers.handlers import HandlerRegistry, TaskHandler, registry
from sluice.workers.priority import ALL_QUEUES, PRIORITY_QUEUES, Priority, route
from sluice.workers.queue import AsyncTaskQueue, TaskHandle
from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
from sluice.workers.submit import submit_task

__all__ = [
    "ALL_QUEUES",
    "AMQP_PRIORITY_QUEUE",
    "PRIORITY_QUEUES",
    "AsyncTaskQueue",
    "BatchResult",
    "DeadLetterQueue",
    "HandlerRegistry",
    "Priority",
    "RateLimiter",
    "TaskHandle",
    "TaskHandler",
    "broker_queues",
    "check_broker_reachable",
    "declared_queues",
    "define_rate_limit",
    "get_rate_limit",
    "physical_queue",
    "registry",
    "route",
    "submit_batch",
    "submit_task",
]
