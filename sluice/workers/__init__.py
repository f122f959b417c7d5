"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters.

Handlers and plain ``@sluice_task`` functions are Celery tasks built on :class:`SluiceTask`. Names are
loaded on first use (PEP 562), so importing one light submodule (``sluice.workers.embedded``,
``sluice.workers.priority``) does not load Celery. The handler names come through the task layer
(:mod:`sluice.workers.task`), so a handler registered through them becomes its Celery task at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.workers.batching import BatchResult, ChunkedBatch, submit_batch, submit_chunks
    from sluice.workers.deadletter import DeadLetterQueue
    from sluice.workers.priority import Priority, route
    from sluice.workers.queue import AsyncTaskQueue, TaskHandle
    from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
    from sluice.workers.submit import submit_task
    from sluice.workers.task import SluiceTask, TaskHandler, registry, sluice_task

_HOMES = {
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
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
