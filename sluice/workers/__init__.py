"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters."""

from sluice.workers.batching import BatchResult, submit_batch
from sluice.workers.deadletter import DeadLetterQueue
from sluice.workers.handlers import HandlerRegistry, TaskHandler, registry
from sluice.workers.priority import ALL_QUEUES, PRIORITY_QUEUES, Priority, route
from sluice.workers.queue import AsyncTaskQueue, TaskHandle
from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
from sluice.workers.submit import submit_task

__all__ = [
    "ALL_QUEUES",
    "PRIORITY_QUEUES",
    "AsyncTaskQueue",
    "BatchResult",
    "DeadLetterQueue",
    "HandlerRegistry",
    "Priority",
    "RateLimiter",
    "TaskHandle",
    "TaskHandler",
    "define_rate_limit",
    "get_rate_limit",
    "registry",
    "route",
    "submit_batch",
    "submit_task",
]
