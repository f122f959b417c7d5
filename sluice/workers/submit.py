"""Submission: validate at the door, then publish (or run inline when async processing is off).

Nothing is enqueued for an unknown handler, a payload that is not JSON, one over the size limit, a
priority out of range or an unknown rate-limit name: the caller gets a clear error instead of a task
that can only fail later. Handler payloads and plain sluice tasks' arguments go through the same
:func:`check_payload`.
"""

from __future__ import annotations

import json
from typing import Any

from celery.result import AsyncResult

from sluice.errors import InvalidInput
from sluice.settings import get_settings
from sluice.workers.handlers import TaskHandler, handler_task_name, registry
from sluice.workers.loading import ensure_handlers_loaded
from sluice.workers.priority import Priority


def check_payload(payload: Any) -> None:
    """Raise :class:`InvalidInput` unless ``payload`` is a JSON object within the size limit."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"a payload must be a dict (a JSON object), got {type(payload).__name__}"
        )
    try:
        size = len(json.dumps(payload, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"payload is not JSON-serialisable: {exc}") from None
    limit = get_settings().max_payload_bytes
    if size > limit:
        raise InvalidInput(
            f"payload is {size} bytes, over the {limit}-byte limit (SLUICE_MAX_PAYLOAD_BYTES)"
        )


def resolve(name: str, priority: Priority | str | int | None) -> tuple[TaskHandler, Priority]:
    """The handler for ``name`` and the priority to use (its default when None)."""
    ensure_handlers_loaded()
    handler = registry.get(name)
    return handler, Priority.parse(handler.priority if priority is None else priority)


def handler_task(name: str) -> Any:
    """The Celery task of handler ``name`` (``InvalidInput`` if no such handler is registered)."""
    from sluice.celery import app

    ensure_handlers_loaded()
    registry.get(name)
    return app.tasks[handler_task_name(name)]


def submit_task(
    name: str,
    payload: dict[str, Any],
    priority: Priority | str | int | None = None,
    countdown: float | None = None,
) -> AsyncResult:
    """Publish one payload for handler ``name``; returns its result handle.

    The same as ``handler_task(name).apply_async((payload,), priority=..., countdown=...)``, except
    that BATCH submissions of handlers that support batching go to the micro-batching task, which
    buffers them in the batch workers. With ``ASYNC_PROCESSING_ENABLED=false`` the task runs
    inline, with the same retry and dead-letter rules.
    """
    handler, level = resolve(name, priority)
    micro = level is Priority.BATCH and handler.supports_batch()
    if micro and get_settings().async_processing_enabled:
        from sluice.workers.batching import submit_micro

        return submit_micro(name, payload, countdown)
    return handler_task(name).apply_async((payload,), priority=level, countdown=countdown)
