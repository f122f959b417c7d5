"""A Celery worker running in threads of the current process.

``AsyncTaskQueue.start()`` uses it so handlers defined in the caller's own script (unknown to any
``celery -A sluice worker`` process) still run through the broker, exactly like the guide's example.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from celery._state import _set_task_join_will_block
from celery.worker import WorkController
from celery.worker import state as worker_state

from sluice.errors import BackendUnavailable
from sluice.workers.priority import ALL_QUEUES


class _Controller(WorkController):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


class InProcessWorker:
    """Start with :meth:`start`, stop with :meth:`stop`; consumes every sluice queue."""

    def __init__(
        self, app: Any, concurrency: int = 4, queues: tuple[str, ...] = ALL_QUEUES
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.queues = queues
        self._controller: _Controller | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            return
        self.app.loader.import_default_modules()
        self._controller = _Controller(
            app=self.app,
            concurrency=self.concurrency,
            pool="threads",
            hostname=f"inprocess-{uuid.uuid4().hex[:8]}@localhost",
            queues=list(self.queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        )
        self._thread = threading.Thread(
            target=self._controller.start, name="sluice-worker", daemon=True
        )
        self._thread.start()
        if not self._controller.ready.wait(timeout):
            raise BackendUnavailable(
                f"the in-process worker did not connect to the broker within {timeout}s"
            )
        # Starting a pool marks the whole process as "inside a task", which makes every
        # ``result.get()`` of the submitting code raise; this process is a producer too
        # (as in celery.contrib.testing.worker).
        _set_task_join_will_block(False)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running tasks finish, then stop consuming."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        worker_state.should_terminate = 0
        thread.join(timeout)
        worker_state.should_terminate = None
        self._controller = None
