"""Celery's Redis result backend, minus a round trip per published sluice task.

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

from celery.backends.redis import RedisBackend as CeleryRedisBackend

_polled: ContextVar[bool] = ContextVar("sluice_result_polled", default=False)
#: The ``result_backend`` prefix that selects this class (``<prefix>redis://...``).
SCHEME_PREFIX = f"{__name__}:RedisBackend+"


@contextmanager
def polled_results() -> Iterator[None]:
    """Publish in this block without subscribing to the results (they are waited by polling)."""
    token = _polled.set(True)
    try:
        yield
    finally:
        _polled.reset(token)


class RedisBackend(CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        if not _polled.get():
            super().on_task_call(producer, task_id)
