"""Helpers for the worker tests: switch this process's settings (and Celery app) for one test.

``sluice.settings.get_settings`` is cached and ``sluice.celery.app`` reads its broker and result
backend once from ``celeryconfig``; :func:`settings_env` sets variables, clears those caches, points
the app at the new broker, and restores everything afterwards.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CELERY_KEYS = (
    "broker_url",
    "result_backend",
    "broker_transport_options",
    "result_backend_transport_options",
    "database_engine_options",
    # The queues depend on the broker (one shared priority queue on RabbitMQ).
    "task_queues",
    "task_default_queue",
    "task_routes",
    "task_always_eager",
)


def _refresh(reconfigure_celery: bool) -> None:
    import celeryconfig
    from sluice.celery import app
    from sluice.settings import get_settings
    from sluice.store import reset_store_cache
    from sluice.workers import ratelimit, stats

    stats.counters().flush()  # into the store of the settings being left
    get_settings.cache_clear()
    reset_store_cache()
    with ratelimit._limits_lock:
        ratelimit._limits.clear()
        ratelimit._env_loaded = False
    if not reconfigure_celery:
        return
    importlib.reload(celeryconfig)
    app.conf.update({key: getattr(celeryconfig, key) for key in CELERY_KEYS})
    app._pool = None  # kombu keeps one pool per broker URL; the next use picks the new one
    # Queues, routes and the producer pool are read from the configuration once: rebuild them.
    app.__dict__.pop("amqp", None)
    app._backend_cache = None
    app._local = threading.local()


@contextmanager
def settings_env(reconfigure_celery: bool = False, **env: str) -> Iterator[None]:
    """Run the block with ``env`` set in ``os.environ`` and every cache that read it cleared."""
    # celeryconfig reads the settings once, when first imported: never under ``env``, or its
    # values (queues, broker options) would outlive the block.
    import celeryconfig  # noqa: F401

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    _refresh(reconfigure_celery)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh(reconfigure_celery)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)
