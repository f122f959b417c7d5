"""Submission: validate at the door, then publish (or run inline when async processing is off).

Nothing is enqueued for an unknown handler, a payload that is not JSON, one over the size limit, a
priority out of range or an unknown rate-limit name: the caller gets a clear error instead of a task
that can only fail later. Handler payloads and plain sluice tasks' arguments go through the same
:func:`check_payload`.
"""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult

from sluice.errors import ConfigurationError, InvalidInput
from sluice.settings import get_settings
from sluice.workers import stats
from sluice.workers.backend import polled_results
from sluice.workers.handlers import TaskHandler, handler_task_name, registry
from sluice.workers.loading import ensure_handlers_loaded
from sluice.workers.payload import check_json_object
from sluice.workers.priority import Priority, route
from sluice.workers.ratelimit import get_rate_limit

#: The task that buffers single BATCH payloads in the batch workers (:mod:`sluice.workers.tasks`).
MICROBATCH = "sluice.microbatch"


def check_payload(payload: Any, headers: Any = None) -> str:
    """Raise :class:`InvalidInput` unless ``payload`` (and the caller's message ``headers``, when
    given) is a JSON object every hop carries unchanged, within the size limit (see
    :mod:`sluice.workers.payload`); return the payload's compact JSON text."""
    limit = get_settings().max_payload_bytes
    text = check_json_object(payload, "payload", limit)
    if headers is not None:
        check_json_object(headers, "headers", limit)
    return text


def check_countdown(countdown: Any) -> None:
    """Raise :class:`InvalidInput` unless ``countdown`` is None or within ``SLUICE_MAX_COUNTDOWN``."""
    if countdown is None:
        return
    limit = get_settings().max_countdown
    if not (isinstance(countdown, int | float) and 0 <= countdown <= limit):
        raise InvalidInput(f"countdown must be between 0 and {limit:g} seconds, got {countdown!r}")


def check_rate_limit(name: str | None) -> None:
    """Raise :class:`InvalidInput` unless ``name`` is None or a defined global rate limit."""
    if name is None:
        return
    try:
        get_rate_limit(name)
    except ConfigurationError as exc:
        raise InvalidInput(str(exc)) from None


def resolve(name: str, priority: Priority | str | int | None) -> tuple[TaskHandler, Priority]:
    """The handler for ``name`` and the priority to use (its default when None)."""
    ensure_handlers_loaded()
    handler = registry.get(name)
    return handler, Priority.parse(handler.priority if priority is None else priority)


def handler_task(name: str) -> Any:
    """The Celery task of handler ``name`` (``InvalidInput`` if no such handler is registered)."""
    from sluice.celery import app

    resolve(name, None)
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
    from sluice.celery import app

    handler, level = resolve(name, priority)
    if level is Priority.BATCH and handler.supports_batch():
        return _submit_micro(handler, name, payload, countdown)
    task = app.tasks[handler_task_name(name)]
    return task.apply_async((payload,), priority=level, countdown=countdown)


def _submit_micro(
    handler: TaskHandler, name: str, payload: dict[str, Any], countdown: float | None
) -> AsyncResult:
    """One BATCH payload for the micro-batching task (inline: its handler's task, at once)."""
    from sluice.celery import app

    if not get_settings().async_processing_enabled:
        return handler_task(name).apply_async((payload,), priority=Priority.BATCH)
    check_payload(payload)
    check_countdown(countdown)
    check_rate_limit(handler.rate_limit)
    stats.record("submitted", Priority.BATCH.queue, name)
    with polled_results():
        return app.tasks[MICROBATCH].apply_async(
            (name, payload, {"priority": int(Priority.BATCH)}),
            countdown=countdown,
            **route(Priority.BATCH),
        )
