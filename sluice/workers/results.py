"""Waiting for task results by polling the result backend.

Celery's Redis backend delivers results over pub/sub; a task redelivered after its worker died can
finish while nobody is subscribed, and ``AsyncResult.get()`` then stalls for minutes on a result that
is already stored (found by the SIGKILL drill). Every wait in sluice therefore polls ``ready()`` (one
read per interval, backing off to 50-100 ms) and reads the value only once it is there.
"""

from __future__ import annotations

import asyncio
import logging
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


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _check(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BackendUnavailable(f"{what} did not finish in time")


def wait_ready(
    results: Sequence[AsyncResult],
    timeout: float | None,
    what: str,
    on_wait: Callable[[], None] | None = None,
) -> None:
    """Block until every result is ready; ``on_wait`` runs between polls (and may raise)."""
    deadline, pause = _deadline(timeout), _FIRST_PAUSE
    while not all(result.ready() for result in results):
        _check(deadline, what)
        if on_wait:
            on_wait()
        time.sleep(pause)
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
