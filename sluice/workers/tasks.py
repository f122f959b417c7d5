"""The Celery tasks around handlers: chord chunks, their merge, micro-batches, dead-letter pruning.

Each handler is its own task (``sluice.handlers.<name>``, :mod:`sluice.workers.task`); the tasks
here run many payloads of one handler in one ``execute_batch`` call. An item that fails inside a
batch is handed to its handler's own task to be retried (and dead-lettered) alone. Importing this
module (it is in the Celery app's ``include`` list) loads ``SLUICE_HANDLER_MODULES``: a module
that cannot be imported stops the worker from starting, with that module's error.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import task_unknown
from celery_batches import Batches, SimpleRequest

from sluice.celery import app
from sluice.errors import InvalidInput, RetryLater, SluiceError, TaskFailed
from sluice.settings import get_settings
from sluice.taskcontext import current_priority
from sluice.workers import headers as hdr
from sluice.workers import stats
from sluice.workers.handlers import (
    HANDLER_PREFIX,
    TaskHandler,
    load_handler_modules,
    registry,
    run_maybe_async,
)
from sluice.workers.priority import Priority, route
from sluice.workers.submit import MICROBATCH, handler_task
from sluice.workers.task import attempt_record, backoff_seconds, dead_letters, take_token

log = logging.getLogger(__name__)

load_handler_modules(get_settings().handler_modules)


def _level(meta: dict[str, Any], handler: TaskHandler) -> Priority:
    return Priority.parse(meta.get("priority", int(handler.priority)))


def execute_batch_safely(handler: TaskHandler, payloads: list[dict[str, Any]]) -> list[Any]:
    """One result per payload; an exception instance in a slot marks that item as failed."""
    try:
        results = run_maybe_async(handler.execute_batch(payloads))
        if not isinstance(results, list) or len(results) != len(payloads):
            raise InvalidInput(
                f"{type(handler).__name__}.execute_batch returned {type(results).__name__} "
                f"of length {len(results) if isinstance(results, list) else '?'} for {len(payloads)} payloads"
            )
        return results
    except Exception as exc:  # the whole call failed: every item is retried on its own
        log.warning(
            "batch of %d for %s failed: %s; retrying items alone",
            len(payloads),
            handler.task_name,
            exc,
        )
        return [exc] * len(payloads)


def _retry_headers(level: Priority, exc: BaseException) -> dict[str, Any]:
    return {hdr.PRIORITY: int(level), hdr.HISTORY: [attempt_record(1, exc)]}


def _dead_letter_unretried(
    task_id: str, name: str, payload: dict[str, Any], level: Priority, exc: BaseException
) -> TaskFailed:
    """Dead-letter a batch item whose handler allows no retry (attempt 1 was its last)."""
    entry = dead_letters().add(
        task_id=task_id,
        task_name=name,
        payload=payload,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        queue=level.queue,
        priority=int(level),
        attempts=1,
        history=[attempt_record(1, exc)],
    )
    stats.record("failed", level.queue, name)
    stats.record("dead_lettered", level.queue, name)
    return TaskFailed(f"{name} failed after 1 attempt ({exc}); dead-letter entry #{entry}")


def retry_alone(
    name: str,
    payload: dict[str, Any],
    level: Priority,
    exc: BaseException,
    task_id: str | None = None,
) -> Any:
    """Send one failed batch item to its handler's task (attempt 1 already used)."""
    handler = registry.get(name)
    if isinstance(exc, RetryLater):  # not a failure: run it alone once the wait is over
        return handler_task(name).apply_async(
            (payload,),
            task_id=task_id,
            countdown=min(exc.wait_seconds, get_settings().max_countdown),
            headers={hdr.PRIORITY: int(level)},
        )
    if handler.max_retries < 1:
        raise _dead_letter_unretried(task_id or "batch-item", name, payload, level, exc)
    stats.record("retries", level.queue, name)
    return handler_task(name).apply_async(
        (payload,),
        task_id=task_id,
        retries=1,
        countdown=backoff_seconds(handler.backoff, handler.backoff_max, 0),
        headers=_retry_headers(level, exc),
    )


def inline_retry(name: str, payload: dict[str, Any], level: Priority, exc: BaseException) -> Any:
    """Inline mode's :func:`retry_alone`: run the item's remaining attempts now."""
    if registry.get(name).max_retries < 1:
        raise _dead_letter_unretried("batch-item", name, payload, level, exc)
    outcome = handler_task(name).apply((payload,), retries=1, headers=_retry_headers(level, exc))
    if outcome.failed():
        raise (
            outcome.result
            if isinstance(outcome.result, TaskFailed)
            else TaskFailed(str(outcome.result))
        )
    return outcome.result


def _republish(task: Task, args: tuple[Any, ...], level: Priority, wait: float) -> None:
    # Same id, same retry count: a rate-limit wait is not a failed attempt.
    task.signature_from_request(
        task.request, args, {}, countdown=wait, retries=task.request.retries, **route(level)
    ).apply_async()


@app.task(bind=True, name="sluice.run_batch", acks_late=True)
def run_batch(
    self: Task, name: str, items: list[list[Any]], meta: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One chord chunk: ``items`` are ``[index, payload]``; returns one entry per item.

    An entry is ``{"index", "result"}``, or ``{"index", "task_id"}`` for an item that failed here
    and now retries alone (in inline mode it is retried at once and the entry holds its outcome).
    """
    meta = dict(meta or {})
    handler = registry.get(name)
    level = _level(meta, handler)
    while wait := take_token(handler.rate_limit, level, name):
        if not self.request.is_eager:
            _republish(self, (name, items, meta), level, wait)
            raise Ignore()
        time.sleep(wait)
    token = current_priority.set(int(level))
    try:
        results = execute_batch_safely(handler, [payload for _, payload in items])
    finally:
        current_priority.reset(token)
    entries: list[dict[str, Any]] = []
    # Items that failed here are counted by their handler's task when their retry completes.
    done = sum(1 for result in results if not isinstance(result, BaseException))
    for (index, payload), result in zip(items, results, strict=True):
        if not isinstance(result, BaseException):
            entries.append({"index": index, "result": result})
        elif self.request.is_eager:
            try:
                entries.append(
                    {"index": index, "result": inline_retry(name, payload, level, result)}
                )
            except TaskFailed as failure:
                entries.append({"index": index, "error": str(failure)})
        else:
            try:
                retried = retry_alone(name, payload, level, result)
                entries.append({"index": index, "task_id": retried.id})
            except TaskFailed as failure:
                entries.append({"index": index, "error": str(failure)})
    stats.record("batches_processed", level.queue, name)
    stats.record("completed", level.queue, name, done)
    return entries


@app.task(name="sluice.collect_batch")
def collect_batch(chunks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The chord body: every chunk's entries in submission order."""
    return sorted((entry for chunk in chunks for entry in chunk), key=lambda e: e["index"])


@app.task(
    base=Batches,
    name=MICROBATCH,
    flush_every=get_settings().batch_flush_every,
    flush_interval=get_settings().batch_flush_interval,
    acks_late=True,
)
def microbatch(requests: list[SimpleRequest]) -> None:
    """Single BATCH submissions buffered by the worker and run as ``execute_batch`` calls.

    Messages are acknowledged after this returns (celery-batches with ``acks_late``), so a batch
    worker killed mid-batch loses nothing: its unacknowledged messages are delivered again.
    """
    groups: dict[str, list[SimpleRequest]] = defaultdict(list)
    for request in requests:
        groups[request.args[0]].append(request)
    for name, group in groups.items():
        try:
            handler = registry.get(name)
        except InvalidInput as exc:
            for request in group:
                failure = _dead_letter_unretried(
                    request.id, name, request.args[1], Priority.BATCH, exc
                )
                app.backend.mark_as_failure(request.id, failure, request=request)
            continue
        for start in range(0, len(group), handler.batch_size):
            _run_micro_chunk(handler, name, group[start : start + handler.batch_size])


def _run_micro_chunk(handler: TaskHandler, name: str, requests: list[SimpleRequest]) -> None:
    wait = take_token(handler.rate_limit, Priority.BATCH, name)
    if wait:
        for request in requests:
            microbatch.apply_async(
                request.args, task_id=request.id, countdown=wait, **route(Priority.BATCH)
            )
        return
    token = current_priority.set(int(Priority.BATCH))
    try:
        results = execute_batch_safely(handler, [r.args[1] for r in requests])
    finally:
        current_priority.reset(token)
    done = 0
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, BaseException):
            try:
                retry_alone(name, request.args[1], Priority.BATCH, result, task_id=request.id)
            except SluiceError as failure:
                app.backend.mark_as_failure(request.id, failure, request=request)
        else:
            app.backend.mark_as_done(request.id, result, request=request)
            done += 1
    stats.record("batches_processed", "batch", name)
    stats.record("completed", "batch", name, done)


@app.task(name="sluice.prune_dead_letters")
def prune_dead_letters(older_than_days: float | None = None) -> int:
    """Delete dead-letter entries past the retention period (beat, daily)."""
    return dead_letters().prune(older_than_days or get_settings().retention_days)


@task_unknown.connect(weak=False)
def dead_letter_unknown_task(
    name: str | None = None, id: str | None = None, message: Any = None, **_: Any
) -> None:
    """Keep a message for a task this worker does not know as a dead letter, never drop it.

    Celery rejects such a message (and fails its result with ``NotRegistered``); the entry keeps
    its payload so ``sluice dlq replay`` can send it again once a worker has the task.
    """
    try:
        args, kwargs, _embed = message.decode()
        priority = int(message.headers.get(hdr.PRIORITY, int(Priority.NORMAL)))
        level = Priority.parse(priority)
        handler = str(name).removeprefix(HANDLER_PREFIX)
        if str(name).startswith(HANDLER_PREFIX) and len(args) == 1 and not kwargs:
            label, payload = handler, args[0]
        else:
            label, payload = str(name), {"args": list(args), "kwargs": dict(kwargs)}
        entry = dead_letters().add(
            task_id=str(id),
            task_name=label,
            payload=payload,
            error=f"NotRegistered: no task named {name!r} in this worker "
            "(is its module in SLUICE_HANDLER_MODULES?)",
            queue=level.queue,
            priority=int(level),
        )
        stats.record("failed", level.queue, label)
        stats.record("dead_lettered", level.queue, label)
        log.error("message %s for unknown task %s kept as dead letter #%d", id, name, entry)
    except Exception:
        log.exception("message %s for unknown task %s could not be dead-lettered", id, name)
