"""AsyncTaskQueue: the guide's queue API as a facade over Celery."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from typing import Any

from celery.result import AsyncResult

from sluice.errors import TaskFailed
from sluice.settings import get_settings
from sluice.workers import stats
from sluice.workers.batching import submit_batch
from sluice.workers.handlers import TaskHandler, registry
from sluice.workers.inprocess import InProcessWorker
from sluice.workers.priority import Priority
from sluice.workers.results import await_ready, value_of, wait_ready
from sluice.workers.submit import submit_task


class TaskHandle:
    """A submitted task: ``await handle`` (or ``handle.get()``) returns its result."""

    def __init__(self, result: AsyncResult) -> None:
        self.result = result

    @property
    def id(self) -> str:
        return str(self.result.id)

    def get(self, timeout: float | None = None) -> Any:
        """Block for the result; raise :class:`TaskFailed` if it failed after its retries."""
        wait_ready([self.result], timeout, f"task {self.id}")
        return self._outcome()

    async def wait(self, timeout: float | None = None) -> Any:
        await await_ready([self.result], timeout, f"task {self.id}")
        return self._outcome()

    def _outcome(self) -> Any:
        value = value_of(self.result)
        if self.result.failed():
            raise (
                value
                if isinstance(value, TaskFailed)
                else TaskFailed(f"{type(value).__name__}: {value}")
            )
        return value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.wait().__await__()


class AsyncTaskQueue:
    """Register handlers, start embedded workers, submit work, read cluster-wide stats.

    ``start()`` runs a Celery worker in threads of this process (so handlers defined in the
    calling script work); in a deployment, ``celery -A sluice worker`` processes do the work and
    the queue is only used to submit.
    """

    def __init__(self, app: Any = None) -> None:
        from sluice.celery import app as default_app

        self.app = app or default_app
        self._worker: InProcessWorker | None = None

    def register_handler(self, handler: TaskHandler) -> None:
        registry.register(handler)

    async def start(self, num_workers: int = 4) -> None:
        """Start ``num_workers`` worker threads in this process (nothing to start in sync mode)."""
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if not get_settings().async_processing_enabled or self._worker is not None:
            return
        worker = InProcessWorker(self.app, concurrency=num_workers)
        await asyncio.to_thread(worker.start)
        self._worker = worker

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        stats.counters().flush()

    async def submit(
        self,
        name: str,
        payload: dict[str, Any],
        priority: Priority | str | int | None = None,
        countdown: float | None = None,
    ) -> TaskHandle:
        """Queue one payload; ``await`` the returned handle for its result."""
        return TaskHandle(submit_task(name, payload, priority, countdown=countdown))

    async def submit_batch(
        self,
        name: str,
        payloads: Sequence[dict[str, Any]],
        priority: Priority | str | int | None = Priority.BATCH,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run payloads in chunks as a chord; one result per payload, in submission order."""
        return await submit_batch(name, payloads, priority).wait(timeout)

    def get_stats(self) -> dict[str, Any]:
        """The guide's stats, cluster-wide, with pending summed over every priority list."""
        return stats.snapshot(self.app)
