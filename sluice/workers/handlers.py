"""TaskHandler, the guide's unit of work, and the registry every worker process reads.

A handler is a class with a ``task_name`` and an ``execute`` method (sync or ``async``); handlers
that can process many payloads in one call also implement ``execute_batch``. Handlers register into
:data:`registry`, which makes each one its own Celery task, ``sluice.handlers.<task_name>``
(:mod:`sluice.workers.task`); worker processes import the modules that define them (those of the
Celery app's ``include`` list and of ``SLUICE_HANDLER_MODULES``) when they start, so a name
submitted anywhere resolves in every worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from sluice.errors import ConfigurationError, InvalidInput
from sluice.workers.priority import Priority

log = logging.getLogger(__name__)
#: Prefix of every handler's Celery task name.
HANDLER_PREFIX = "sluice.handlers."


def handler_task_name(name: str) -> str:
    """The Celery task name of handler ``name`` (what Flower and ``inspect registered`` show)."""
    return HANDLER_PREFIX + name


class TaskHandler:
    """Base class of handlers. Override ``task_name`` and ``execute`` (or ``execute_batch``).

    Class attributes tune how the platform runs it: ``priority`` (the default queue),
    ``batch_size`` (chunk size of :meth:`AsyncTaskQueue.submit_batch`), ``max_retries`` and
    ``backoff`` (base seconds of the exponential backoff, capped at ``backoff_max``), and
    ``rate_limit`` (the name of a limit defined with :func:`sluice.workers.define_rate_limit`).
    """

    priority: ClassVar[Priority] = Priority.NORMAL
    batch_size: ClassVar[int] = 50
    max_retries: ClassVar[int] = 3
    backoff: ClassVar[float] = 2.0
    backoff_max: ClassVar[float] = 300.0
    rate_limit: ClassVar[str | None] = None

    @property
    def task_name(self) -> str:
        raise NotImplementedError("a TaskHandler must define task_name")

    def supports_batch(self) -> bool:
        """Whether :meth:`execute_batch` processes many payloads in one call."""
        return False

    def execute(self, payload: dict[str, Any]) -> Any:
        """Process one payload. May be ``async def``. Raise to have it retried."""
        if self.supports_batch():
            result = run_maybe_async(self.execute_batch([payload]))[0]
            if isinstance(result, BaseException):  # a failed slot: fail (and retry) this payload
                raise result
            return result
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        """Process many payloads; return one result per payload, in order. May be ``async def``."""
        return [run_maybe_async(self.execute(p)) for p in payloads]

    def dead_letter_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """What the dead letter of a failed payload keeps, to be replayed later: the payload
        itself, unless a handler makes it self-contained (inlines what it only refers to)."""
        return payload


def run_maybe_async(value: Any) -> Any:
    """The value itself, or the awaited result when a handler method was ``async def``."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    # Inline mode called from a coroutine (``await queue.submit(...)`` with async processing off):
    # asyncio.run() cannot nest, so the handler gets a loop of its own in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sluice-inline") as pool:
        return pool.submit(asyncio.run, _await(value)).result()


async def _await(awaitable: Any) -> Any:
    return await awaitable


class HandlerRegistry:
    """Handlers by task name, shared by everything in one process."""

    def __init__(self) -> None:
        self._handlers: dict[str, TaskHandler] = {}
        self._listeners: list[Callable[[TaskHandler], object]] = []
        self._lock = threading.Lock()

    def on_register(self, listener: Callable[[TaskHandler], object]) -> None:
        """Call ``listener`` with every handler registered so far and from now on."""
        with self._lock:
            self._listeners.append(listener)
            known = list(self._handlers.values())
        for handler in known:
            listener(handler)

    def register(self, handler: TaskHandler) -> TaskHandler:
        if not isinstance(handler, TaskHandler):
            raise InvalidInput(
                f"handlers must be TaskHandler instances, got {type(handler).__name__}"
            )
        name = handler.task_name
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{type(handler).__name__}.task_name must be a non-empty string")
        with self._lock:
            self._handlers[name] = handler
            listeners = list(self._listeners)
        for listener in listeners:
            listener(handler)
        return handler

    def get(self, name: str) -> TaskHandler:
        handler = self._handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise InvalidInput(f"no handler named {name!r} is registered (known: {known})")
        return handler

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


#: The process-wide registry.
registry = HandlerRegistry()


def load_handler_modules(modules: Iterable[str]) -> None:
    """Import the modules that define handlers (each registers its handlers on import)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the module raised: a worker must not start without it
            raise ConfigurationError(
                f"SLUICE_HANDLER_MODULES: cannot import {module!r}: {type(exc).__name__}: {exc}"
            ) from exc
