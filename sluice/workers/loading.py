"""Import the modules that register handlers, once per process (what a worker imports at start)."""

from __future__ import annotations

import functools
import os

from sluice.settings import get_settings
from sluice.workers.handlers import load_handler_modules


@functools.cache
def _load(pid: int) -> None:
    from sluice.celery import app

    load_handler_modules(get_settings().handler_modules)
    # The app's ``include`` list: the main job registers its handlers there.
    app.loader.import_default_modules()


def ensure_handlers_loaded() -> None:
    """Register the handlers of ``SLUICE_HANDLER_MODULES`` and of the Celery app's task modules."""
    _load(os.getpid())
