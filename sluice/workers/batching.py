"""Explicit batches: payloads split into chunks of the handler's ``batch_size`` and run as a chord.

The chord's body merges the chunks' entries back into submission order. An item that failed inside
its chunk was handed to its handler's own task to be retried (and dead-lettered)
alone, so its entry names that task; :class:`BatchResult` waits for those too and returns one value
per payload, a :class:`~sluice.errors.TaskFailed` in the slot of an item that finally failed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery import chord
from celery.result import AsyncResult, EagerResult

from sluice.errors import InvalidInput, TaskFailed
from sluice.settings import get_settings
from sluice.workers import stats
from sluice.workers.backend import polled_results
from sluice.workers.priority import Priority, route
from sluice.workers.results import await_ready, value_of, wait_ready
from sluice.workers.submit import check_payload, check_rate_limit, resolve


class BatchResult:
    """The pending outcome of :func:`submit_batch`: ``get()`` or ``await wait()``."""

    def __init__(self, result: AsyncResult | EagerResult, size: int) -> None:
        self.result = result
        self.size = size

    @property
    def id(self) -> str:
        return str(self.result.id)

    def ready(self) -> bool:
        return bool(self.result.ready())

    def get(self, timeout: float | None = None) -> list[Any]:
        """Block for one value per payload, in submission order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_ready([self.result], timeout, f"batch {self.id}")
        entries = value_of(self.result)
        retried = self._retried(entries)
        wait_ready(retried, _remaining(deadline), f"batch {self.id}: retried items")
        return [self._resolve(entry) for entry in entries]

    async def wait(self, timeout: float | None = None) -> list[Any]:
        """Await the results without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await await_ready([self.result], timeout, f"batch {self.id}")
        entries = value_of(self.result)
        retried = self._retried(entries)
        await await_ready(retried, _remaining(deadline), f"batch {self.id}: retried items")
        return [self._resolve(entry) for entry in entries]

    def _retried(self, entries: list[dict[str, Any]]) -> list[AsyncResult]:
        return [AsyncResult(e["task_id"], app=self.result.app) for e in entries if "task_id" in e]

    def _resolve(self, entry: dict[str, Any]) -> Any:
        if "result" in entry:
            return entry["result"]
        if "error" in entry:
            return TaskFailed(entry["error"])
        retried = AsyncResult(entry["task_id"], app=self.result.app)
        value = value_of(retried)
        return TaskFailed(str(value)) if retried.failed() else value


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def submit_batch(
    name: str,
    payloads: Sequence[dict[str, Any]],
    priority: Priority | str | int | None = Priority.BATCH,
) -> BatchResult:
    """Run ``payloads`` through handler ``name`` in chunks of its ``batch_size``, as one chord."""
    from sluice.workers.tasks import collect_batch, run_batch

    handler, level = resolve(name, priority)
    check_rate_limit(handler.rate_limit)
    if isinstance(payloads, dict | str) or not isinstance(payloads, Sequence):
        raise InvalidInput("payloads must be a list of dicts")
    if not payloads:
        raise InvalidInput("payloads is empty: there is nothing to submit")
    for payload in payloads:
        check_payload(payload)
    items = [[index, payload] for index, payload in enumerate(payloads)]
    size = max(1, handler.batch_size)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    meta = {"priority": int(level)}
    stats.record("submitted", level.queue, name, len(payloads))
    if not get_settings().async_processing_enabled:
        entries = [e for chunk in chunks for e in run_batch.apply((name, chunk, meta)).get()]
        return BatchResult(EagerResult("inline-batch", entries, "SUCCESS"), len(payloads))
    options = route(level)
    header = [run_batch.signature((name, chunk, meta), **options) for chunk in chunks]
    # countdown=0: on a result backend without native chords (the embedded SQLite one) the first
    # chord_unlock poll runs at once instead of after Celery's default second (a falsy countdown
    # sets no ETA, so nothing else is delayed); later polls come every result_chord_retry_interval.
    body = collect_batch.signature((), **options)
    with polled_results():  # BatchResult polls
        return BatchResult(chord(header)(body, countdown=0), len(payloads))
