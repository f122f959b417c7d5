"""Waiting for task results by polling the result backend, woken early by its pub/sub.

Celery's Redis backend delivers results over pub/sub; a task redelivered after its worker died can
finish while nobody is subscribed, and ``AsyncResult.get()`` then stalls for minutes on a result that
is already stored (found by the SIGKILL drill). Every wait in sluice therefore polls ``ready()`` (one
read per interval, backing off to 50 ms) and reads the value only once it is there. Between reads it
listens (:class:`ResultBell`): the read follows the moment a result is published, not the end of the
interval, and no read is spent on an interval in which nothing finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.result import AsyncResult, EagerResult

from sluice.errors import BackendUnavailable

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.05
#: How often a bell on a SQLite result backend looks at the database's files.
FILE_WATCH_PAUSE = 0.002


def _signature(paths: list[str]) -> list[tuple[int, int] | None]:
    """What changes when a database file is written: each file's modification time and size."""
    signature: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((status.st_mtime_ns, status.st_size))
    return signature


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _check(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BackendUnavailable(f"{what} did not finish in time")


class ResultBell:
    """Wakes a waiter as soon as one of the results it waits for is stored.

    Celery's Redis backend publishes every result it stores on the task's key, in the transaction
    that stores it. The bell subscribes to those keys (one command, no reply awaited) and
    :meth:`wait` returns at the first message, or after its timeout. On a SQLite database backend
    (the embedded one) it watches the database's files instead, every :data:`FILE_WATCH_PAUSE`:
    a stat costs microseconds, a read of the results a query. A hint, never the truth: results
    are always read from the store, so one stored while nobody listened (a task redelivered after
    its worker died) is found by the next read, at most a timeout later. Other backends, inline
    results, or a subscription that failed: :meth:`wait` sleeps.
    """

    def __init__(self, results: Sequence[AsyncResult] = ()) -> None:
        self._pubsub: Any = None
        self._files: list[str] = []
        self._unheard: list[AsyncResult] = []
        self.watch(results)

    def watch(self, results: Sequence[AsyncResult]) -> None:
        """Also wake when one of ``results`` is stored (subscribed at the next :meth:`wait`, so
        a waiter whose results are in at its first read never opens a connection)."""
        self._unheard += [r for r in results if not isinstance(r, EagerResult)]

    def wait(self, seconds: float) -> None:
        """Return when a watched result is published, or after ``seconds``."""
        self._subscribe()
        if self._files:
            self._wait_for_files(seconds)
            return
        if self._pubsub is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            # None also comes back at once for a subscription's own confirmation: wait on.
            while (left := deadline - time.monotonic()) > 0:
                if self._pubsub.get_message(timeout=left) is not None:
                    while self._pubsub.get_message(timeout=0) is not None:
                        pass  # several stored at once: one read answers them all
                    return
        except Exception as exc:
            log.info("waiting for results by polling only: %s", exc)
            self.close()

    def _wait_for_files(self, seconds: float) -> None:
        deadline, before = time.monotonic() + seconds, _signature(self._files)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(FILE_WATCH_PAUSE, left))
            if _signature(self._files) != before:
                return

    def _subscribe(self) -> None:
        unheard, self._unheard = self._unheard, []
        if not unheard:
            return
        backend = unheard[0].backend
        url = getattr(backend, "url", None)  # a database backend's SQLAlchemy URL
        if isinstance(url, str) and url.startswith("sqlite:///"):
            database = url.removeprefix("sqlite:///").partition("?")[0]
            self._files = [database, database + "-wal", database + "-journal"]
            return
        client: Any = getattr(backend, "client", None)
        if not isinstance(backend, BaseKeyValueStoreBackend) or not hasattr(client, "pubsub"):
            return
        try:
            if self._pubsub is None:
                self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(*(backend.get_key_for_task(r.id) for r in unheard))
        except Exception as exc:
            log.info("waiting for results by polling only: %s", exc)
            self.close()

    def close(self) -> None:
        """Stop listening (the connection goes back to its pool); :meth:`wait` then sleeps."""
        self._unheard, self._files = [], []
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # closing a connection that already failed
                log.debug("result bell closed uncleanly", exc_info=True)

    def __enter__(self) -> ResultBell:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_ready(
    results: Sequence[AsyncResult],
    timeout: float | None,
    what: str,
    on_wait: Callable[[], None] | None = None,
) -> None:
    """Block until every result is ready; ``on_wait`` runs between polls (and may raise)."""
    deadline, pause = _deadline(timeout), _FIRST_PAUSE
    with ResultBell(results) as bell:
        while not all(result.ready() for result in results):
            _check(deadline, what)
            if on_wait:
                on_wait()
            bell.wait(pause)
            pause = min(pause * 2, _MAX_PAUSE)


async def await_ready(results: Sequence[AsyncResult], timeout: float | None, what: str) -> None:
    """:func:`wait_ready` without blocking the event loop."""
    deadline, pause = _deadline(timeout), _FIRST_PAUSE
    while not all(result.ready() for result in results):
        _check(deadline, what)
        await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


def forget_quietly(result: AsyncResult) -> None:
    """Delete a result that has been read; a backend that cannot be reached right now is not an error.

    Forgetting is clean-up (results expire after ``result_expires`` anyway), and Celery retries
    backend reads (``result_backend_always_retry``) but not this delete: a Redis restart that
    begins between a result's read and its delete raised ConnectionError out of ``sluice analyze``
    although every file had been analysed. Load widens that window, which is how the
    broker-restart drill most likely failed under load (the only backend call on that path not retried).
    """
    try:
        result.forget()
    except Exception as exc:
        log.info("result %s not forgotten now (it expires on its own): %s", result.id, exc)


def value_of(result: AsyncResult) -> Any:
    """The value of a ready result: its return value, or the exception it failed with."""
    return result.get(timeout=1, propagate=False, interval=0.02)


def ready_outcomes(results: Sequence[AsyncResult]) -> dict[str, tuple[bool, Any]]:
    """The finished ones among ``results``: ``{id: (succeeded, value or exception)}``.

    One MGET for all of them on a key-value result backend (Redis), instead of a read per
    result; other backends (and inline results) are asked one by one.
    """
    if not results:
        return {}
    backend = results[0].backend
    if not isinstance(results[0], EagerResult) and isinstance(backend, BaseKeyValueStoreBackend):
        try:
            raws = backend.mget([backend.get_key_for_task(r.id) for r in results])
        except Exception as exc:
            # A backend restart: the per-result reads below go through Celery's own retries
            # (result_backend_always_retry), which the bulk read does not.
            if not backend.exception_safe_to_retry(exc):
                raise
            log.info("bulk result read failed (%s); reading results one by one", exc)
            return _ready_one_by_one(results)
        found: dict[str, tuple[bool, Any]] = {}
        for result, raw in zip(results, raws, strict=True):
            if raw is None:
                continue
            meta = backend.decode_result(raw)
            if meta["status"] in states.READY_STATES:
                found[result.id] = (meta["status"] == states.SUCCESS, meta["result"])
        return found
    return _ready_one_by_one(results)


def _ready_one_by_one(results: Sequence[AsyncResult]) -> dict[str, tuple[bool, Any]]:
    return {
        result.id: (result.successful(), value_of(result)) for result in results if result.ready()
    }
