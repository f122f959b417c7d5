"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters.

Handlers and plain ``@sluice_task`` functions are Celery tasks built on :class:`SluiceTask`.
"""

from sluice.workers.batching import BatchResult, submit_batch
from sluice.workers.deadletter import DeadLetterQueue
from sluice.workers.handlers import TaskHandler, registry
from sluice.workers.priority import Priority, route
from sluice.workers.queue import AsyncTaskQueue, TaskHandle
from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
from sluice.workers.submit import submit_task
from sluice.workers.task import SluiceTask, sluice_task

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
    "route",
    # plain Celery tasks with sluice's features
    "SluiceTask",
    "sluice_task",
    # limits and failures
    "RateLimiter",
    "define_rate_limit",
    "get_rate_limit",
    "DeadLetterQueue",
]
