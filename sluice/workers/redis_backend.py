"""Celery's Redis result backend, minus a round trip per published sluice task.

Selected by ``celeryconfig`` when results go to Redis (:data:`SCHEME_PREFIX`); a module of its own so
that a worker on another backend never imports redis-py. See :mod:`sluice.workers.backend`.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as CeleryRedisBackend

from sluice.workers.backend import subscribes

#: The ``result_backend`` prefix that selects this class (``<prefix>redis://...``).
SCHEME_PREFIX = f"{__name__}:RedisBackend+"


class RedisBackend(CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        if subscribes():
            super().on_task_call(producer, task_id)
