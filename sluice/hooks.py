"""Observation hooks: the layers below announce what happened, the layers above listen.

The query layer announces each statement it timed (:func:`query_finished`); monitoring turns that
into metrics. Neither imports the other: observers are registered with :func:`on_query` by the
modules named in the ``sluice.observers`` entry-point group, loaded the first time something is
announced in a process, so every process that runs queries records them. Task metrics need no hook
here: monitoring listens to Celery's own task signals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

#: ``(seconds, shape, slow)``: one database statement; ``shape`` is a ``QueryShape`` or None.
QueryObserver = Callable[[float, Any, bool], None]
ENTRY_POINT_GROUP = "sluice.observers"

_query_observers: list[QueryObserver] = []
_loaded = False
_lock = threading.Lock()


def on_query(observer: QueryObserver) -> QueryObserver:
    """Call ``observer`` for every statement timed in this process (registering twice is a no-op)."""
    with _lock:
        if observer not in _query_observers:
            _query_observers.append(observer)
    return observer


def load_observers() -> None:
    """Run every ``sluice.observers`` entry point once per process (each registers its hooks)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()()
        except Exception:  # an observer must never break the code it observes
            log.warning("observer %s could not be installed", point.value, exc_info=True)


def query_finished(seconds: float, shape: Any, slow: bool) -> None:
    """Announce one database statement to every query observer."""
    load_observers()
    for observer in list(_query_observers):
        try:
            observer(seconds, shape, slow)
        except Exception:
            log.debug("query observer %r failed", observer, exc_info=True)
