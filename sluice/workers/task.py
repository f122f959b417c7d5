"""SluiceTask: sluice's features on any Celery task; handlers are Celery tasks built on it.

``@sluice_task(priority=Priority.HIGH, rate_limit="openai", max_retries=3)`` (or
``app.task(base=SluiceTask, ...)``) gives a plain Celery task:

- routing by priority: ``apply_async`` sends it to the queue of its priority with the broker
  priority that keeps the strict order on Redis (``priority=`` per call takes a :class:`Priority`);
- the global token bucket named by ``rate_limit``: with no token left the message is re-published
  with a countdown (same id, same retry count), never slept on in a worker slot;
- retries through Celery's own ``self.retry`` with exponential backoff and full jitter
  (``retry_backoff`` base seconds, capped at ``retry_backoff_max``);
- after the last retry, a dead letter with its payload (``{"args", "kwargs"}``, or a handler's
  payload) and attempt history, replayable with ``sluice dlq replay``;
- :class:`~sluice.errors.RetryLater` from the task body: re-published after its wait, at the same
  priority, not counted as an attempt and never dead-lettered;
- :data:`sluice.taskcontext.current_priority` set around the body, and counters for
  ``sluice queue stats`` (durations come from Celery's signals, recorded by monitoring).

What a message carries besides its arguments (priority, attempt history, replay count) travels in
message headers, so ``.s()``, groups and chords see the task's own arguments only. A
:class:`~sluice.workers.TaskHandler` is registered as one such task, named
``sluice.handlers.<task_name>`` (:func:`handler_task_name`), whose single argument is the payload.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, cast

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from sluice.errors import InvalidInput, RetryLater, TaskFailed
from sluice.retrying import backoff_with_jitter
from sluice.settings import get_settings
from sluice.taskcontext import current_priority
from sluice.workers import headers as hdr
from sluice.workers import stats
from sluice.workers.backend import polled_results
from sluice.workers.handlers import TaskHandler, handler_task_name, registry, run_maybe_async
from sluice.workers.priority import Priority, route
from sluice.workers.ratelimit import get_rate_limit
from sluice.workers.submit import check_countdown, check_payload, check_rate_limit

if TYPE_CHECKING:
    from sluice.workers.deadletter import DeadLetterQueue

log = logging.getLogger(__name__)

#: Attempts kept in a task's history (the newest).
HISTORY_LIMIT = 20
#: How long a task waits to try again when even its dead-letter entry could not be written.
DEAD_LETTER_RETRY_SECONDS = 30.0


def dead_letters() -> DeadLetterQueue:
    """The dead-letter table. Its module (SQLAlchemy) loads on a task's last failure, not with the
    task layer: a client that only submits (``sluice analyze`` on external workers) never needs it."""
    from sluice.workers.deadletter import DeadLetterQueue

    return DeadLetterQueue()


def attempt_record(attempt: int, exc: BaseException) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "error": f"{type(exc).__name__}: {exc}",
        "at": datetime.now(UTC).isoformat(),
    }


def backoff_seconds(base: float, ceiling: float, retry: int) -> float:
    """Exponential backoff with jitter for retry number ``retry`` (0-based), never past the
    longest countdown sluice schedules."""
    return backoff_with_jitter(retry, base, min(ceiling, get_settings().max_countdown))


def take_token(limit: str | None, level: Priority, label: str) -> float:
    """0 if ``limit`` granted a token (or there is none), else the seconds to wait for one."""
    if not limit:
        return 0.0
    grant = get_rate_limit(limit).take()
    if grant.granted:
        return 0.0
    stats.record("rate_limited", level.queue, label)
    return min(grant.wait_seconds, get_settings().max_countdown)


@functools.lru_cache(maxsize=4096)
def _metric_labels(queue: str, handler: str) -> Mapping[str, str]:
    # Asked for on every run; read-only, as one mapping is shared by every run of the series.
    return MappingProxyType({"queue": queue, "handler": handler})


class SluiceTask(Task):
    """Base class of sluice tasks; configure with class attributes (or ``app.task`` options).

    ``level`` (the default :class:`Priority`), ``global_rate_limit`` (a limit's name),
    ``max_retries``, ``retry_backoff`` and ``retry_backoff_max`` (Celery's own names).
    """

    level: ClassVar[Priority] = Priority.NORMAL
    global_rate_limit: ClassVar[str | None] = None
    max_retries = 3
    retry_backoff: ClassVar[float] = 2.0
    retry_backoff_max: ClassVar[float] = 300.0
    acks_late = True

    # -- what a dead letter holds, and how a replay rebuilds the call -----------------------------

    @property
    def label(self) -> str:
        """The name in stats, metrics and the dead-letter table."""
        return str(self.name)

    def metric_labels(self) -> Mapping[str, str]:
        """``queue`` and ``handler`` of the running call (monitoring labels its durations so)."""
        level = Priority.parse(hdr.read(self.request, hdr.PRIORITY, int(self.level)))
        return _metric_labels(level.queue, self.label)

    def payload_of(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """The JSON object validated at submit and kept in a dead letter."""
        return {"args": list(args or ()), "kwargs": dict(kwargs or {})}

    def kept_payload(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """What a dead letter keeps of a call: :meth:`payload_of`, by default."""
        return self.payload_of(args, kwargs)

    def call_of(self, payload: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``args, kwargs`` from a dead letter's payload (the inverse of :meth:`payload_of`)."""
        return list(payload.get("args", [])), dict(payload.get("kwargs", {}))

    def args_shown(self, payload_json: str) -> str | None:
        """How the message shows its positional arguments (Flower, events, worker logs), made from
        the payload's JSON text validated at submit; None leaves it to Celery (``saferepr``)."""
        return None

    # -- submission ---------------------------------------------------------------------------

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Publish to the queue of the task's priority (``priority=`` a :class:`Priority`).

        Validates the call first (payload, priority, countdown, rate-limit name); a retry or a
        re-publish of a message already accepted only re-routes it. With
        ``ASYNC_PROCESSING_ENABLED=false`` the task runs here, with the same rules.
        """
        given = options.pop("headers", None)
        if given is not None and not isinstance(given, dict):
            raise InvalidInput(
                f"headers must be a dict (a JSON object), got {type(given).__name__}"
            )
        headers = dict(given or {})
        if options.get("retries"):  # a retry of an accepted message: its priority is in headers
            level = Priority.parse(headers.get(hdr.PRIORITY, int(self.level)))
        else:
            level = self._accept(args, kwargs, options, headers)
        headers[hdr.PRIORITY] = int(level)
        options.update(route(level))
        if not get_settings().async_processing_enabled:
            for option in ("queue", "priority", "countdown", "eta", "producer", "chord"):
                options.pop(option, None)
            return self.apply(args, kwargs, task_id=task_id, headers=headers, **options)
        with polled_results():
            return super().apply_async(args, kwargs, task_id=task_id, headers=headers, **options)

    def _accept(
        self, args: Any, kwargs: Any, options: dict[str, Any], headers: dict[str, Any]
    ) -> Priority:
        priority = options.pop("priority", None)
        if hdr.PRIORITY in headers and priority is None:
            priority = headers[hdr.PRIORITY]
        level = self.level if priority is None else Priority.parse(priority)
        text = check_payload(self.payload_of(args, kwargs), headers or None)
        shown = self.args_shown(text)
        if shown is not None and "argsrepr" not in options:
            # The text exists already; Celery's saferepr would walk the payload once more.
            options["argsrepr"] = shown[: self.app.amqp.argsrepr_maxsize]
        check_countdown(options.get("countdown"))
        check_rate_limit(self.global_rate_limit)
        stats.record("submitted", level.queue, self.label)
        return level

    # -- execution ----------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly:  # a plain function call: no message, no sluice machinery
            return super().__call__(*args, **kwargs)
        level = Priority.parse(hdr.read(request, hdr.PRIORITY, int(self.level)))
        token = current_priority.set(int(level))
        try:
            return self._execute(level, args, kwargs)
        finally:
            current_priority.reset(token)

    def _execute(self, level: Priority, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = self.request
        while True:
            wait = take_token(self.global_rate_limit, level, self.label)
            if not wait:
                stats.adjust_running(1)
                try:
                    result = self.run(*args, **kwargs)
                    json.dumps(result)  # a result Celery cannot store fails here, visibly
                except (Retry, Ignore, Reject):
                    raise
                except RetryLater as exc:
                    wait = min(exc.wait_seconds, get_settings().max_countdown)
                    log.info("task %s (%s) retries later: %s", request.id, self.label, exc)
                except Exception as exc:
                    raise self._failed(level, exc) from exc
                else:
                    stats.record("completed", level.queue, self.label)
                    return result
                finally:
                    stats.adjust_running(-1)
            if request.is_eager:  # inline mode: the caller's thread is the only slot there is
                time.sleep(wait)
                continue
            # Same id, same retry count: waiting for a token or a window is not a failed attempt.
            self.republish(level, wait)
            raise Ignore()

    def republish(self, level: Priority, countdown: float) -> None:
        """Publish the running message again after ``countdown`` seconds, same id and retries."""
        request = self.request
        options = request.as_execution_options()
        options["headers"] = hdr.of(request)
        options.update(route(level), countdown=countdown)
        super().apply_async(request.args, request.kwargs, **options)

    def _failed(self, level: Priority, exc: Exception) -> BaseException:
        """Retry with backoff while attempts are left; then the dead letter (or keep the message)."""
        request = self.request
        attempt = request.retries + 1
        history = [*hdr.read(request, hdr.HISTORY, []), attempt_record(attempt, exc)]
        headers = {**hdr.of(request), hdr.HISTORY: history[-HISTORY_LIMIT:]}
        if self.max_retries is None or request.retries < self.max_retries:
            stats.record("retries", level.queue, self.label)
            countdown = backoff_seconds(self.retry_backoff, self.retry_backoff_max, request.retries)
            return cast(
                BaseException,
                self.retry(exc=exc, countdown=countdown, headers=headers, throw=False),
            )
        try:
            return self.dead_letter(level, exc, attempt, history, request.args, request.kwargs)
        except Exception as store_error:
            if request.is_eager:
                raise
            # A task must never vanish: with the database down, keep the message for later.
            log.error(
                "task %s (%s) could not be dead-lettered (%s); trying again in %.0fs",
                request.id, self.label, store_error, DEAD_LETTER_RETRY_SECONDS,
            )  # fmt: skip
            self.republish(level, min(DEAD_LETTER_RETRY_SECONDS, get_settings().max_countdown))
            return Ignore()

    def dead_letter(
        self,
        level: Priority,
        exc: BaseException,
        attempts: int,
        history: list[Any],
        args: Any,
        kwargs: Any,
    ) -> TaskFailed:
        """Record a call that will not be retried again; returns the error to fail it with."""
        request = self.request
        error = f"{type(exc).__name__}: {exc}"
        entry = dead_letters().add(
            task_id=str(request.id),
            task_name=self.label,
            payload=self.kept_payload(args, kwargs),
            error=error,
            traceback="".join(traceback.format_exception(exc)),
            queue=level.queue,
            priority=int(level),
            attempts=attempts,
            history=history[-HISTORY_LIMIT:],
            replays=int(hdr.read(request, hdr.REPLAYS, 0)),
        )
        stats.record("failed", level.queue, self.label)
        stats.record("dead_lettered", level.queue, self.label)
        log.error(
            "task %s (%s) dead-lettered as #%d after %d attempts: %s",
            request.id, self.label, entry, attempts, error,
        )  # fmt: skip
        return TaskFailed(
            f"{self.label} failed after {attempts} attempts ({error}); dead-letter entry #{entry}"
        )

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Dead-letter a failure that did not come through the body (a time limit, a lost worker).

        Failures of the body were dead-lettered after their last retry already (they fail with
        :class:`TaskFailed`, naming the entry).
        """
        if isinstance(exc, TaskFailed) or self.request.is_eager:
            return
        level = Priority.parse(hdr.read(self.request, hdr.PRIORITY, int(self.level)))
        attempt = self.request.retries + 1
        history = [*hdr.read(self.request, hdr.HISTORY, []), attempt_record(attempt, exc)]
        try:
            self.dead_letter(level, exc, attempt, history, args, kwargs)
        except Exception:
            log.exception("task %s (%s) failed and could not be dead-lettered", task_id, self.label)


class HandlerTask(SluiceTask):
    """The Celery task of one :class:`~sluice.workers.TaskHandler`: ``task(payload)``."""

    handler_name: ClassVar[str] = ""

    @property
    def label(self) -> str:
        return self.handler_name

    def payload_of(self, args: Any, kwargs: Any) -> dict[str, Any]:
        if kwargs or len(args or ()) != 1:
            raise InvalidInput(f"{self.name} takes one payload (a dict), got {args!r} {kwargs!r}")
        return cast(dict[str, Any], args[0])

    def kept_payload(self, args: Any, kwargs: Any) -> dict[str, Any]:
        return registry.get(self.handler_name).dead_letter_payload(self.payload_of(args, kwargs))

    def call_of(self, payload: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        return [payload], {}

    def args_shown(self, payload_json: str) -> str:
        return f"[{payload_json}]"  # the one argument, as a JSON array of the arguments


def _run_handler(self: HandlerTask, payload: dict[str, Any]) -> Any:
    return run_maybe_async(registry.get(self.handler_name).execute(payload))


def bind_handler(handler: TaskHandler) -> HandlerTask:
    """Register (or update) the Celery task of ``handler``."""
    from sluice.celery import app

    name = handler.task_name
    options = {
        "level": handler.priority,
        "global_rate_limit": handler.rate_limit,
        "max_retries": handler.max_retries,
        "retry_backoff": handler.backoff,
        "retry_backoff_max": handler.backoff_max,
    }
    task = app.task(
        _run_handler,
        name=handler_task_name(name),
        base=HandlerTask,
        bind=True,
        shared=False,
        lazy=False,
        handler_name=name,
        **options,
    )
    for key, value in options.items():  # a handler registered again under its name wins
        setattr(type(task), key, value)
    task.__doc__ = type(handler).__doc__
    return cast(HandlerTask, task)


def sluice_task(
    fun: Callable[..., Any] | None = None,
    *,
    priority: Priority | str | int = Priority.NORMAL,
    rate_limit: str | None = None,
    max_retries: int | None = 3,
    backoff: float = 2.0,
    backoff_max: float = 300.0,
    app: Any = None,
    **options: Any,
) -> Any:
    """Register ``fun`` as a Celery task with sluice's priority, rate limit, retries, dead letters.

    ``@sluice_task`` or ``@sluice_task(priority=Priority.HIGH, rate_limit="openai", max_retries=3,
    name="myapp.summarise", bind=True)``; other options go to ``app.task``. ``rate_limit`` names a
    global limit (:func:`~sluice.workers.define_rate_limit` / ``SLUICE_RATE_LIMITS``), shared by
    every worker process (unlike Celery's own per-worker ``rate_limit``).
    """
    level = Priority.parse(priority)
    if rate_limit is not None and (not isinstance(rate_limit, str) or not rate_limit):
        raise InvalidInput(f"rate_limit must be the name of a global limit, got {rate_limit!r}")

    def decorate(function: Callable[..., Any]) -> SluiceTask:
        from sluice.celery import app as default_app

        return cast(
            SluiceTask,
            (app or default_app).task(
                function,
                base=SluiceTask,
                level=level,
                global_rate_limit=rate_limit,
                max_retries=max_retries,
                retry_backoff=backoff,
                retry_backoff_max=backoff_max,
                **options,
            ),
        )

    return decorate(fun) if fun is not None else decorate


# Every handler, registered before or after this import, becomes its own Celery task.
registry.on_register(bind_handler)
