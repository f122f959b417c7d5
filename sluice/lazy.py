"""Lazy package exports: a name is imported from its home module on first use (PEP 562).

``sluice analyze --help`` must not pay for Celery and SQLAlchemy; packages whose public names pull
those in export them through :func:`lazy_exports` instead of importing every module up front.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from ``package.homes[name]``
    on first access and keeps it in the package's namespace, so later accesses cost nothing."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
