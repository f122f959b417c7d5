"""The Celery application: ``celery -A sluice worker|beat|flower|inspect`` find ``app`` here.

Configuration comes from the top-level :mod:`celeryconfig` module, itself derived from
:mod:`sluice.settings`. It is named, not imported: the policy sits above the packages whose queues
and schedules it names (which import this app), so no import edge points up from here. Task
modules are listed in ``include`` (the main job's handlers among them) so every worker process
knows them.
"""

from __future__ import annotations

import importlib

from celery import Celery

from sluice.settings import get_settings

TASK_MODULES = [
    "sluice.analysis.tasks",
    "sluice.workers.tasks",
    "sluice.cdn.tasks",
    "sluice.workers.watchdog",  # the consumer watchdog and its canary task
    "sluice.workers.pool",  # garbage collection in pool processes
    "sluice.monitoring.signals",  # metric flushes, CDN purge outcomes, log format and redaction
]


def _prepare_embedded_dirs() -> None:
    """Create the folders the embedded broker and SQLite files live in."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.embedded_broker:
        settings.broker_dir.mkdir(exist_ok=True)
        (settings.data_dir / "broker-control").mkdir(exist_ok=True)


_prepare_embedded_dirs()

#: Signal receivers every process needs, producers included (publish hooks), not only workers.
#: Imported by name with the app, before Celery builds its task sender (which takes the publish
#: signals' receiver lists once: a receiver connected later was not always called).
SIGNAL_MODULES = ["sluice.monitoring.queuewait"]

app = Celery("sluice", include=TASK_MODULES)
# Loaded now (force), not at the first use of the configuration: that can be in several threads
# at once (the health checks), each then importing the packages the policy names.
app.config_from_object("celeryconfig", force=True)
for _module in SIGNAL_MODULES:
    importlib.import_module(_module)


__all__ = ["app"]
