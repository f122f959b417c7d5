"""Task processing on Celery (guide section 2): priorities, handlers, batching, limits, dead letters.

Names are loaded on first use (PEP 562), so importing one light submodule (``sluice.workers.embedded``,
``sluice.workers.priority``) does not load Celery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.workers.batching import BatchResult, submit_batch
    from sluice.workers.deadletter import DeadLetterQueue
    from sluice.workers.handlers import HandlerRegistry, TaskHandler, registry
    from sluice.workers.priority import ALL_QUEUES, PRIORITY_QUEUES, Priority, route
    from sluice.workers.queue import AsyncTaskQueue, TaskHandle
    from sluice.workers.ratelimit import RateLimiter, define_rate_limit, get_rate_limit
    from sluice.workers.submit import submit_task

_HOMES = {
    "BatchResult": "batching",
    "submit_batch": "batching",
    "DeadLetterQueue": "deadletter",
    "HandlerRegistry": "handlers",
    "TaskHandler": "handlers",
    "registry": "handlers",
    "ALL_QUEUES": "priority",
    "PRIORITY_QUEUES": "priority",
    "Priority": "priority",
    "route": "priority",
    "AsyncTaskQueue": "queue",
    "TaskHandle": "queue",
    "RateLimiter": "ratelimit",
    "define_rate_limit": "ratelimit",
    "get_rate_limit": "ratelimit",
    "submit_task": "submit",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
