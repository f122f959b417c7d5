"""Import the modules that register handlers, once per process."""

from __future__ import annotations

import functools
import os

from sluice.settings import get_settings
from sluice.workers.handlers import load_handler_modules

BUILTIN_HANDLERS = "sluice.workers.builtin"


@functools.cache
def _load(pid: int) -> None:
    load_handler_modules([BUILTIN_HANDLERS, *get_settings().handler_modules])


def ensure_handlers_loaded() -> None:
    """Register the built-in handlers and those of ``SLUICE_HANDLER_MODULES`` in this process."""
    _load(os.getpid())
