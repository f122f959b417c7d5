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
from sluice.workers.results import (
    ResultBell,
    await_ready,
    forget_quietly,
    ready_outcomes,
    value_of,
    wait_ready,
)
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
    chunks = _checked_chunks(payloads, handler.batch_size)
    meta = {"priority": int(level)}
    stats.record("submitted", level.queue, name, len(payloads))
    if not get_settings().async_processing_enabled:
        entries = [e for chunk in chunks for e in run_batch.apply((name, chunk, meta)).get()]
        return BatchResult(EagerResult("inline-batch", entries, "SUCCESS"), len(payloads))
    options = route(level)
    header = [
        run_batch.signature((name, chunk, meta), argsrepr=_shown(name, chunk, meta), **options)
        for chunk in chunks
    ]
    # countdown=0: on a result backend without native chords (the embedded SQLite one) the first
    # chord_unlock poll runs at once instead of after Celery's default second (a falsy countdown
    # sets no ETA, so nothing else is delayed); later polls come every result_chord_retry_interval.
    body = collect_batch.signature((), **options)
    with polled_results():  # BatchResult polls
        return BatchResult(chord(header)(body, countdown=0), len(payloads))


def _shown(name: str, chunk: list[list[Any]], meta: dict[str, Any]) -> str:
    """How a chunk task shows its arguments (Flower, events, worker logs): which items, not their
    payloads (Celery's ``saferepr`` walked a 256 KB chunk for a thousand characters of source)."""
    first, last = chunk[0][0], chunk[-1][0]
    return f"({name!r}, <{len(chunk)} items: {first}..{last}>, {meta!r})"


def _checked_chunks(
    payloads: Sequence[dict[str, Any]],
    batch_size: int,
    weights: Sequence[float] | None = None,
    budget: float | None = None,
) -> list[list[list[Any]]]:
    """``[index, payload]`` items in chunks of at most ``batch_size``; with ``weights``, a chunk
    also closes once its items' weights reach ``budget`` (every chunk holds at least one item)."""
    if isinstance(payloads, dict | str) or not isinstance(payloads, Sequence):
        raise InvalidInput("payloads must be a list of dicts")
    if not payloads:
        raise InvalidInput("payloads is empty: there is nothing to submit")
    if weights is not None and len(weights) != len(payloads):
        raise InvalidInput(f"got {len(weights)} weights for {len(payloads)} payloads")
    for payload in payloads:
        check_payload(payload)
    size = max(1, batch_size)
    chunks: list[list[list[Any]]] = [[]]
    load = 0.0
    for index, payload in enumerate(payloads):
        full = len(chunks[-1]) >= size or (
            budget is not None and weights is not None and load >= budget
        )
        if chunks[-1] and full:
            chunks.append([])
            load = 0.0
        chunks[-1].append([index, payload])
        load += weights[index] if weights is not None else 1.0
    return chunks


class ChunkedBatch:
    """The pending outcome of :func:`submit_chunks`: :meth:`poll` hands out values as they arrive,
    :meth:`wait` returns when there may be more (a chunk's result was stored) or after a timeout.
    Listening holds a connection until every value is in, or :meth:`close`."""

    def __init__(self, chunks: dict[str, list[int]], results: list[AsyncResult], size: int) -> None:
        self.size = size
        self._indexes = chunks  # chunk task id -> the payload indexes it carries
        self._waiting: dict[str, AsyncResult] = {r.id: r for r in results}
        self._retried: dict[str, int] = {}  # task id of an item retried alone -> its index
        self._app = results[0].app
        self._bell = ResultBell(results)

    @property
    def pending(self) -> int:
        """Chunks and items retried alone still to finish."""
        return len(self._waiting)

    def poll(self) -> list[tuple[int, Any]]:
        """``(index, value)`` of every item finished since the last poll (one backend round trip).

        A value is the item's result, or a :class:`~sluice.errors.TaskFailed` for an item that
        finally failed (after its retries alone, dead-lettered).
        """
        finished = ready_outcomes(list(self._waiting.values()))
        values: list[tuple[int, Any]] = []
        for task_id, (succeeded, value) in finished.items():
            result = self._waiting.pop(task_id)
            if task_id in self._retried:
                index = self._retried.pop(task_id)
                values.append((index, value if succeeded else TaskFailed(str(value))))
            elif not succeeded:  # the chunk task itself failed: every item in it did
                values += [
                    (i, TaskFailed(f"{type(value).__name__}: {value}"))
                    for i in self._indexes[task_id]
                ]
            else:
                values += self._entries(value)
            if not isinstance(result, EagerResult):
                forget_quietly(result)
        if not self._waiting:
            self.close()
        return values

    def wait(self, seconds: float) -> None:
        """Return once a pending chunk's result is stored, or after ``seconds``."""
        self._bell.wait(seconds)

    def close(self) -> None:
        """Stop listening for results (:meth:`poll` still reads them)."""
        self._bell.close()

    def _entries(self, entries: list[dict[str, Any]]) -> list[tuple[int, Any]]:
        values: list[tuple[int, Any]] = []
        for entry in entries:
            if "result" in entry:
                values.append((entry["index"], entry["result"]))
            elif "error" in entry:
                values.append((entry["index"], TaskFailed(entry["error"])))
            else:  # failed in its chunk, retrying alone: wait for its own task
                retried = AsyncResult(entry["task_id"], app=self._app)
                self._retried[retried.id] = entry["index"]
                self._waiting[retried.id] = retried
                self._bell.watch([retried])
        return values


def submit_chunks(
    name: str,
    payloads: Sequence[dict[str, Any]],
    weights: Sequence[float] | None = None,
    budget: float | None = None,
    priority: Priority | str | int | None = None,
) -> ChunkedBatch:
    """Run ``payloads`` through handler ``name`` as independent chunk tasks, no chord.

    For many small payloads where a task each costs more than the work: a chunk holds at most the
    handler's ``batch_size`` payloads and, with ``weights``, closes once their weights reach
    ``budget`` (e.g. bytes of source per task). Each chunk is one ``execute_batch`` call; an item
    failing in it is retried and dead-lettered alone, as in :func:`submit_batch`. Values arrive
    per chunk through :meth:`ChunkedBatch.poll`, so a caller can show progress per item.
    """
    from sluice.workers.tasks import run_batch

    handler, level = resolve(name, priority)
    check_rate_limit(handler.rate_limit)
    chunks = _checked_chunks(payloads, handler.batch_size, weights, budget)
    meta = {"priority": int(level)}
    stats.record("submitted", level.queue, name, len(payloads))
    if not get_settings().async_processing_enabled:
        results = [run_batch.apply((name, chunk, meta)) for chunk in chunks]
    else:
        options = route(level)
        with polled_results():
            results = [
                run_batch.apply_async(
                    (name, chunk, meta), argsrepr=_shown(name, chunk, meta), **options
                )
                for chunk in chunks
            ]
    indexes = {r.id: [i for i, _ in chunk] for r, chunk in zip(results, chunks, strict=True)}
    return ChunkedBatch(indexes, results, len(payloads))
