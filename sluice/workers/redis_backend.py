"""Celery's Redis result backend, minus a round trip per published sluice task and minus bulk
arguments in extended results (:mod:`sluice.workers.backend`).

Selected by ``celeryconfig`` when results go to Redis
(:func:`~sluice.workers.backend.result_backend_url`); a module of its own so that a worker on another
backend never imports redis-py. See :mod:`sluice.workers.backend`.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as CeleryRedisBackend

from sluice.workers.backend import CompactArguments, subscribes


class RedisBackend(CompactArguments, CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        if subscribes():
            super().on_task_call(producer, task_id)
