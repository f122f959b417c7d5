"""Whether a statement run now on a caller's connection sees every commit made before it starts.

Cached results are keyed by table versions read *before* the query runs, so a result may be stored
only if the query's snapshot is at least that recent. A statement that opens a transaction, or runs
in a READ COMMITTED one (PostgreSQL), takes a fresh snapshot; a statement inside an open
REPEATABLE READ/SERIALIZABLE transaction, or an open SQLite transaction, may read a snapshot from
before a commit whose invalidation already happened: its result must neither be stored nor, being
possibly older than the cache, be replaced by a cached one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

_FRESH_LEVELS = {"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"}


def fresh_snapshot(connection: Connection) -> bool:
    """Whether the next statement on ``connection`` reads the latest committed data."""
    dbapi: Any = connection.connection.dbapi_connection
    dialect = connection.dialect.name
    if dialect == "sqlite":
        return not getattr(dbapi, "in_transaction", True)
    if dialect == "postgresql":
        status = _pg_transaction_status(dbapi)
        if status == "idle":
            return True
        return str(connection.get_isolation_level()).upper() in _FRESH_LEVELS
    return False


def _pg_transaction_status(dbapi: Any) -> str:
    info = getattr(dbapi, "info", None)  # psycopg 3
    status = getattr(info, "transaction_status", None)
    if status is None:
        return "unknown"
    return "idle" if getattr(status, "name", "") == "IDLE" else "in transaction"
