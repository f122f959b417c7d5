"""The Celery tasks that run handlers: singly, as chord chunks, and as micro-batches.

Every failure goes through one path: retried with exponential backoff and jitter up to the handler's
``max_retries``, then written to the dead-letter table with its payload and attempt history, never
dropped. A rate-limited handler that finds no token re-publishes its message for when one will be
available (same task id, same retry count) instead of sleeping in a worker slot.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery_batches import Batches, SimpleRequest

from sluice.celery import app
from sluice.errors import InvalidInput, RetryLater, SluiceError, TaskFailed
from sluice.monitoring.recorder import observe_task
from sluice.retrying import backoff_with_jitter
from sluice.settings import get_settings
from sluice.taskcontext import current_priority
from sluice.workers import stats
from sluice.workers.handlers import TaskHandler, registry, run_maybe_async
from sluice.workers.loading import ensure_handlers_loaded
from sluice.workers.priority import Priority, route
from sluice.workers.ratelimit import get_rate_limit

log = logging.getLogger(__name__)
#: Attempts kept in a task's history (the newest).
HISTORY_LIMIT = 20

ensure_handlers_loaded()


def backoff_seconds(handler: TaskHandler, attempt: int) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (0-based)."""
    cap = min(handler.backoff_max, get_settings().max_countdown)
    return backoff_with_jitter(attempt, handler.backoff, cap)


def _level(meta: dict[str, Any], handler: TaskHandler) -> Priority:
    return Priority.parse(meta.get("priority", int(handler.priority)))


def _attempt_record(attempt: int, exc: BaseException) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "error": f"{type(exc).__name__}: {exc}",
        "at": datetime.now(UTC).isoformat(),
    }


def dead_letter(
    task_id: str,
    name: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    exc: BaseException,
    attempts: int,
) -> TaskFailed:
    """Record a task that will not be retried again; returns the error to raise in its place."""
    from sluice.workers.deadletter import DeadLetterQueue

    handler_priority = meta.get("priority", int(Priority.NORMAL))
    level = Priority.parse(handler_priority)
    error = f"{type(exc).__name__}: {exc}"
    entry = DeadLetterQueue().add(
        task_id=task_id,
        task_name=name,
        payload=payload,
        error=error,
        traceback="".join(traceback.format_exception(exc)),
        queue=level.queue,
        priority=int(level),
        attempts=attempts,
        history=meta.get("history", []),
        replays=int(meta.get("replays", 0)),
    )
    stats.record("failed", level.queue, name)
    stats.record("dead_lettered", level.queue, name)
    log.error(
        "task %s (%s) dead-lettered as #%d after %d attempts: %s",
        task_id,
        name,
        entry,
        attempts,
        error,
    )
    return TaskFailed(
        f"{name} failed after {attempts} attempts ({error}); dead-letter entry #{entry}"
    )


def _take_token(task: Task, handler: TaskHandler, name: str, args: tuple[Any, ...]) -> None:
    """Block until the handler's rate limit grants a token, without holding a worker slot."""
    if not handler.rate_limit:
        return
    limiter = get_rate_limit(handler.rate_limit)
    while True:
        grant = limiter.take()
        if grant.granted:
            return
        stats.record("rate_limited", handler.priority.queue, name)
        wait = min(grant.wait_seconds, get_settings().max_countdown)
        if task.request.is_eager:  # inline mode: the caller's thread is the only slot there is
            time.sleep(wait)
            continue
        _publish_later(task, args, RetryLater(wait, f"rate limit {handler.rate_limit}"))
        raise Ignore()


def _publish_later(task: Task, args: tuple[Any, ...], wait: RetryLater) -> None:
    """Publish the task's message again for ``wait.wait_seconds`` from now, at its priority.

    Same id, same retry count: waiting for a limit is not a failed attempt.
    """
    countdown = min(wait.wait_seconds, get_settings().max_countdown)
    log.info("task %s waits %.2fs: %s", task.request.id, countdown, wait.reason)
    task.signature_from_request(
        task.request, args, {}, countdown=countdown, retries=task.request.retries
    ).apply_async()


#: How long a task waits to try again when even its dead-letter entry could not be written.
DEAD_LETTER_RETRY_SECONDS = 30.0


def _give_up(
    task: Task,
    name: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    exc: BaseException,
    attempts: int,
) -> BaseException:
    """Dead-letter the task; if the dead-letter table is unreachable too, keep the message instead.

    A task must never vanish: with the database down, the message is published again for later
    (same id, same retry count) rather than acknowledged as failed with no record of it.
    """
    try:
        return dead_letter(task.request.id, name, payload, meta, exc, attempts)
    except Exception as store_error:
        if task.request.is_eager:
            raise
        wait = min(DEAD_LETTER_RETRY_SECONDS, get_settings().max_countdown)
        log.error(
            "task %s (%s) could not be dead-lettered (%s); trying again in %.0fs",
            task.request.id, name, store_error, wait,
        )  # fmt: skip
        task.signature_from_request(
            task.request, (name, payload, meta), {}, countdown=wait, retries=task.request.retries
        ).apply_async()
        return Ignore()


@app.task(bind=True, name="sluice.run_handler", max_retries=None, acks_late=True)
def run_handler(
    self: Task, name: str, payload: dict[str, Any], meta: dict[str, Any] | None = None
) -> Any:
    """Run one payload through its handler, with retries, rate limiting and dead-lettering."""
    meta = dict(meta or {})
    try:
        handler = registry.get(name)
    except InvalidInput as exc:  # this worker does not know the handler: keep it for replay
        raise _give_up(self, name, payload, meta, exc, self.request.retries + 1) from None
    level = _level(meta, handler)
    _take_token(self, handler, name, (name, payload, meta))
    stats.adjust_running(1)
    priority = current_priority.set(int(level))
    try:
        with observe_task(level.queue, name):
            result = run_maybe_async(handler.execute(payload))
        json.dumps(result)  # a result Celery cannot store is a handler bug: fail it here, visibly
    except RetryLater as wait:
        stats.record("rate_limited", level.queue, name)
        if self.request.is_eager:  # inline mode: the caller's thread is the only slot there is
            time.sleep(min(wait.wait_seconds, get_settings().max_countdown))
            return self.run(name, payload, meta)
        _publish_later(self, (name, payload, meta), wait)
        raise Ignore() from None
    except Exception as exc:
        attempt = self.request.retries + 1
        meta["history"] = [*meta.get("history", []), _attempt_record(attempt, exc)][-HISTORY_LIMIT:]
        if self.request.retries < handler.max_retries:
            stats.record("retries", level.queue, name)
            raise self.retry(
                args=(name, payload, meta),
                countdown=backoff_seconds(handler, self.request.retries),
                exc=exc,
            ) from exc
        raise _give_up(self, name, payload, meta, exc, attempt) from exc
    finally:
        current_priority.reset(priority)
        stats.adjust_running(-1)
    stats.record("completed", level.queue, name)
    return result


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


def retry_alone(
    name: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    exc: BaseException,
    task_id: str | None = None,
) -> Any:
    """Send one failed batch item through :func:`run_handler` (attempt 1 already used)."""
    handler = registry.get(name)
    if isinstance(exc, RetryLater):  # not a failure: run it alone once the wait is over
        return run_handler.apply_async(
            (name, payload, meta),
            task_id=task_id,
            countdown=min(exc.wait_seconds, get_settings().max_countdown),
            **route(_level(meta, handler)),
        )
    meta = {**meta, "history": [_attempt_record(1, exc)]}
    level = _level(meta, handler)
    if handler.max_retries < 1:
        raise dead_letter(task_id or "batch-item", name, payload, meta, exc, 1)
    stats.record("retries", level.queue, name)
    return run_handler.apply_async(
        (name, payload, meta),
        task_id=task_id,
        retries=1,
        countdown=backoff_seconds(handler, 0),
        **route(level),
    )


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
    _take_token(self, handler, name, (name, items, meta))
    payloads = [payload for _, payload in items]
    results = execute_batch_safely(handler, payloads)
    level = _level(meta, handler)
    entries: list[dict[str, Any]] = []
    # Items that failed here are counted by run_handler when their retry completes.
    done = sum(1 for result in results if not isinstance(result, BaseException))
    for (index, payload), result in zip(items, results, strict=True):
        if not isinstance(result, BaseException):
            entries.append({"index": index, "result": result})
        elif self.request.is_eager:
            try:
                entries.append(
                    {"index": index, "result": inline_retry(name, payload, meta, result)}
                )
            except TaskFailed as failure:
                entries.append({"index": index, "error": str(failure)})
        else:
            entries.append({"index": index, "task_id": retry_alone(name, payload, meta, result).id})
    stats.record("batches_processed", level.queue, name)
    stats.record("completed", level.queue, name, done)
    return entries


def inline_retry(
    name: str, payload: dict[str, Any], meta: dict[str, Any], exc: BaseException
) -> Any:
    """Inline mode's :func:`retry_alone`: run the item's remaining attempts now."""
    meta = {**meta, "history": [_attempt_record(1, exc)]}
    outcome = run_handler.apply((name, payload, meta), retries=1)
    if outcome.failed():
        raise (
            outcome.result
            if isinstance(outcome.result, TaskFailed)
            else TaskFailed(str(outcome.result))
        )
    return outcome.result


@app.task(name="sluice.collect_batch")
def collect_batch(chunks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The chord body: every chunk's entries in submission order."""
    return sorted((entry for chunk in chunks for entry in chunk), key=lambda e: e["index"])


@app.task(
    base=Batches,
    name="sluice.microbatch",
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
                failure = dead_letter(
                    request.id, name, request.args[1], dict(request.args[2] or {}), exc, 1
                )
                app.backend.mark_as_failure(request.id, failure, request=request)
            continue
        for start in range(0, len(group), handler.batch_size):
            _run_micro_chunk(handler, name, group[start : start + handler.batch_size])


def _run_micro_chunk(handler: TaskHandler, name: str, requests: list[SimpleRequest]) -> None:
    if handler.rate_limit:
        grant = get_rate_limit(handler.rate_limit).take()
        if not grant.granted:
            wait = min(grant.wait_seconds, get_settings().max_countdown)
            for request in requests:
                microbatch.apply_async(
                    request.args, task_id=request.id, countdown=wait, **route(Priority.BATCH)
                )
            stats.record("rate_limited", "batch", name, len(requests))
            return
    results = execute_batch_safely(handler, [r.args[1] for r in requests])
    done = 0
    for request, result in zip(requests, results, strict=True):
        meta = dict(request.args[2] or {})
        if isinstance(result, BaseException):
            try:
                retry_alone(name, request.args[1], meta, result, task_id=request.id)
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
    from sluice.workers.deadletter import DeadLetterQueue

    return DeadLetterQueue().prune(older_than_days or get_settings().retention_days)
