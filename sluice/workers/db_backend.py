"""Celery's database result backend (the embedded SQLite results), minus bulk arguments in extended
results (:class:`~sluice.workers.backend.CompactArguments`).

Selected by ``celeryconfig`` for ``db+`` result URLs (:func:`~sluice.workers.backend.result_backend_url`);
a module of its own so that a worker on another backend never imports SQLAlchemy for it.
"""

from __future__ import annotations

from celery.backends.database import DatabaseBackend as CeleryDatabaseBackend

from sluice.workers.backend import CompactArguments


class DatabaseBackend(CompactArguments, CeleryDatabaseBackend):
    pass
