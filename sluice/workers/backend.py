"""What sluice's result backends change in Celery's: publishing without a result subscription
(:func:`polled_results`), and extended results without bulk arguments (:class:`CompactArguments`).

On every publish Celery's Redis backend SUBSCRIBEs to the task's result channel, so that a later
``AsyncResult.get()`` hears the result over pub/sub. sluice never waits that way (every wait polls
``ready()``, :mod:`sluice.workers.results`), so for sluice tasks the subscription is a wasted command
per submission and an ever-growing subscription set in long-running producers. A ``get()`` still
works: it subscribes when called and reads the stored result first. Other tasks keep Celery's
behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: Characters of strings (and items) a task's arguments may hold and still be kept in its result.
RESULT_ARGUMENTS_LIMIT = 4096


def result_backend_url(url: str) -> str:
    """The ``result_backend`` setting that selects sluice's subclass of Celery's backend for
    ``url`` (a Redis or ``db+`` URL; any other is returned as it is)."""
    if url.startswith(("redis://", "rediss://")):
        return f"sluice.workers.redis_backend:RedisBackend+{url}"
    if url.startswith("db+"):
        return f"sluice.workers.db_backend:DatabaseBackend+{url[3:]}"
    return url


_polled: ContextVar[bool] = ContextVar("sluice_result_polled", default=False)


@contextmanager
def polled_results() -> Iterator[None]:
    """Publish in this block without subscribing to the results (they are waited by polling)."""
    token = _polled.set(True)
    try:
        yield
    finally:
        _polled.reset(token)


def subscribes() -> bool:
    """Whether a publish now should subscribe to its result (outside :func:`polled_results`)."""
    return not _polled.get()


def arguments_fit(value: Any, limit: int = RESULT_ARGUMENTS_LIMIT) -> bool:
    """Whether ``value`` (JSON-like task arguments) holds at most ``limit`` characters of strings
    and items; the walk stops as soon as it is over, so a 256 KB chunk costs a few steps."""
    budget = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            budget -= len(item)
        elif isinstance(item, dict):
            budget -= len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            budget -= len(item)
            stack.extend(item)
        else:
            budget -= 1
        if budget < 0:
            return False
    return True


class _WithoutArguments:
    """A task request whose ``args`` and ``kwargs`` read as None (everything else delegated)."""

    args = None
    kwargs = None

    def __init__(self, request: Any) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


class CompactArguments:
    """Extended results (``result_extended``) without bulk arguments: a mixin for Celery backends.

    Celery stores a task's arguments with each state it records (STARTED, then SUCCESS), and reads
    the earlier state back before writing the next. For a chunk of source files (up to 1 MB) that
    was the whole chunk encoded twice, written twice, read and decoded once in the worker, and read
    again by whoever polls the result. Arguments over :data:`RESULT_ARGUMENTS_LIMIT` are therefore
    left out (``args`` and ``kwargs`` are None); name, worker, queue and retries are kept. The
    arguments stay in the message, and Flower shows them from its events (``argsrepr``).
    """

    def _get_result_meta(
        self,
        result: Any,
        state: str,
        traceback: Any,
        request: Any,
        format_date: bool = True,
        encode: bool = False,
    ) -> dict[str, Any]:
        if request is not None and not (
            arguments_fit(getattr(request, "args", None))
            and arguments_fit(getattr(request, "kwargs", None))
        ):
            request = _WithoutArguments(request)
        meta: dict[str, Any] = super()._get_result_meta(  # type: ignore[misc]
            result, state, traceback, request, format_date=format_date, encode=encode
        )
        return meta
