"""Publishing without a result subscription: :func:`polled_results`, read by
:class:`sluice.workers.redis_backend.RedisBackend`.

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

_polled: ContextVar[bool] = ContextVar("sluice_result_polled", default=False)


@contextmanager
def polled_results() -> Iterator[None]:
    """Publish in this block without subscribing to the results (they are waited by polling)."""
    token = _polled.set(True)
    try:
        yield
    finally:
        _polled.reset(token)


def subscribes() -> bool:
    """Whether a publish now should subscribe to its result (outside :func:`polled_results`)."""
    return not _polled.get()
