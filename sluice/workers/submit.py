"""Submission: validate at the door, then publish (or run inline when async processing is off).

Nothing is enqueued for an unknown handler, a payload that is not JSON, or one over the size limit:
the caller gets a clear error instead of a task that can only fail later.
"""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult

from sluice.errors import InvalidInput
from sluice.settings import get_settings
from sluice.workers import stats
from sluice.workers.handlers import TaskHandler, registry
from sluice.workers.loading import ensure_handlers_loaded
from sluice.workers.payload import check_json_object
from sluice.workers.priority import Priority, route


def check_payload(payload: Any, meta: Any = None) -> None:
    """Raise :class:`InvalidInput` unless ``payload`` (and ``meta``, when given) is a JSON object
    every hop carries unchanged, within the size limit (see :mod:`sluice.workers.payload`)."""
    limit = get_settings().max_payload_bytes
    check_json_object(payload, "payload", limit)
    if meta is not None:
        check_json_object(meta, "meta", limit)


def resolve(name: str, priority: Priority | str | int | None) -> tuple[TaskHandler, Priority]:
    """The handler for ``name`` and the priority to use (its default when None)."""
    ensure_handlers_loaded()
    handler = registry.get(name)
    return handler, Priority.parse(handler.priority if priority is None else priority)


def submit_task(
    name: str,
    payload: dict[str, Any],
    priority: Priority | str | int | None = None,
    meta: dict[str, Any] | None = None,
    countdown: float | None = None,
) -> AsyncResult:
    """Publish one payload for handler ``name``; returns its result handle.

    BATCH submissions of handlers that support batching go to the micro-batching task, which
    buffers them in the batch workers. With ``ASYNC_PROCESSING_ENABLED=false`` the task runs
    inline, with the same retry and dead-letter rules.
    """
    from sluice.workers.tasks import microbatch, run_handler

    handler, level = resolve(name, priority)
    check_payload(payload, meta)
    if countdown is not None and not 0 <= countdown <= get_settings().max_countdown:
        raise InvalidInput(
            f"countdown must be between 0 and {get_settings().max_countdown:g} seconds"
        )
    args = (name, payload, {**(meta or {}), "priority": int(level)})
    stats.record("submitted", level.queue, name)
    if not get_settings().async_processing_enabled:
        return run_handler.apply(args)
    task = microbatch if level is Priority.BATCH and handler.supports_batch() else run_handler
    return task.apply_async(args, countdown=countdown, **route(level))
