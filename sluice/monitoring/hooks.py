"""What monitoring listens to below it, installed through the ``sluice.observers`` entry point.

Query durations arrive through :mod:`sluice.hooks`; task durations through Celery's task signals
(:mod:`sluice.monitoring.signals`, which every worker imports through the app's ``include`` list).
"""

from __future__ import annotations

from sluice import hooks
from sluice.monitoring.recorder import observe_query


def install() -> None:
    """Register monitoring's observers in this process."""
    hooks.on_query(observe_query)
