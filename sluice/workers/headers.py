"""The message headers sluice adds to a task's own arguments, and how a worker reads them back.

Celery merges custom headers into the message headers, which a worker's request exposes as
attributes; a task run inline (``apply``) has them under ``request.headers`` instead.
"""

from __future__ import annotations

from typing import Any

#: The task's :class:`~sluice.workers.Priority` value.
PRIORITY = "sluice_priority"
#: Its failed attempts so far (``attempt``, ``error``, ``at``), newest last.
HISTORY = "sluice_history"
#: How many times it was replayed from the dead-letter queue.
REPLAYS = "sluice_replays"
ALL = (PRIORITY, HISTORY, REPLAYS)


def read(request: Any, key: str, default: Any = None) -> Any:
    """Header ``key`` of ``request`` (``default`` when absent)."""
    value = getattr(request, key, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(key)
    return default if value is None else value


def of(request: Any) -> dict[str, Any]:
    """Every sluice header ``request`` carries."""
    return {key: value for key in ALL if (value := read(request, key)) is not None}
