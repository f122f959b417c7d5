"""Engine and session factory, one engine per process and URL.

SQLite (the embedded default) is opened in WAL mode with a busy timeout, so the CLI and several worker
processes can write one file; PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from sluice.errors import ConfigurationError
from sluice.settings import get_settings

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def build_engine(url: str) -> Engine:
    """A new engine for ``url`` with sluice's connection policy."""
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"cannot use database URL {url!r}: {exc}") from None


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: ``SLUICE_DATABASE_URL``), shared within one process.

    Keyed by pid as well: a forked Celery child must not reuse its parent's pooled connections.
    """
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = build_engine(url)
        return engine


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    with factory.begin() as session:
        yield session
