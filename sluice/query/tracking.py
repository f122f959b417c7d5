"""WriteTracker: bump table versions for every write an engine executes.

Hooks the engine, so ORM flushes, ``text()`` and ``exec_driver_sql`` writes and DDL all count. A
written table's version is bumped right after the statement (which already invalidates for
autocommit connections), remembered for the transaction, and bumped again *after* the DBAPI
commit: a reader that ran between the first bump and the commit saw the old rows and may have
cached them under the new version; the second bump makes that entry unreachable. On rollback the
pending set is dropped (the first bump only cost a cache miss).

SQLAlchemy's ``commit`` event fires *before* the DBAPI commit, so the after-commit bump wraps the
dialect's ``do_commit``/``do_rollback`` instead (one wrapper per dialect, shared by every tracker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, event

from sluice.errors import SluiceError
from sluice.query.normalizer import QueryNormalizer
from sluice.query.result_cache import EPOCH, QueryResultCache

log = logging.getLogger(__name__)

_Listener = Callable[[Any, bool], None]
_WRAPPED = "_sluice_transaction_listeners"


class WriteTracker:
    """Invalidates ``cache`` for the writes executed through ``engine`` (see module docstring)."""

    def __init__(
        self, engine: Engine, normalizer: QueryNormalizer, cache: QueryResultCache
    ) -> None:
        self.engine = engine
        self.normalizer = normalizer
        self.cache = cache
        self._pending: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> None:
        """Start tracking (idempotent)."""
        if self._installed:
            return
        event.listen(self.engine, "after_cursor_execute", self._after_execute)
        _transaction_listeners(self.engine.dialect).append(self._on_transaction_end)
        self._installed = True

    def uninstall(self) -> None:
        """Stop tracking."""
        if not self._installed:
            return
        event.remove(self.engine, "after_cursor_execute", self._after_execute)
        _transaction_listeners(self.engine.dialect).remove(self._on_transaction_end)
        self._installed = False

    def has_pending_writes(self, connection: Connection) -> bool:
        """Whether ``connection``'s current transaction has written (it then bypasses the cache)."""
        with self._lock:
            return bool(self._pending.get(_dbapi_id(connection.connection)))

    def _after_execute(
        self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
        executemany: bool,
    ) -> None:  # fmt: skip
        shape = self.normalizer.analyze(statement)
        if not shape.is_write:
            return
        # A write sluice cannot attribute to tables (unparsed SQL) invalidates everything.
        tables = set(shape.tables_written) or {EPOCH}
        with self._lock:
            self._pending.setdefault(_dbapi_id(conn.connection), set()).update(tables)
        self._bump(tables)

    def _on_transaction_end(self, dbapi_connection: Any, committed: bool) -> None:
        with self._lock:
            tables = self._pending.pop(_dbapi_id(dbapi_connection), None)
        if tables and committed:
            self._bump(tables)

    def _bump(self, tables: set[str]) -> None:
        try:
            self.cache.bump(tables)
        except SluiceError as exc:
            # The write itself must not fail because the cache is down; entries then live
            # until their TTL, which is why the TTL exists.
            log.error("could not invalidate cached queries on %s: %s", sorted(tables), exc)


def _dbapi_id(connection: Any) -> int:
    return id(getattr(connection, "dbapi_connection", connection))


def _transaction_listeners(dialect: Any) -> list[_Listener]:
    listeners: list[_Listener] | None = dialect.__dict__.get(_WRAPPED)
    if listeners is not None:
        return listeners
    listeners = []
    original_commit, original_rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        original_commit(dbapi_connection)
        for listener in list(listeners):
            listener(dbapi_connection, True)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            original_rollback(dbapi_connection)
        finally:
            for listener in list(listeners):
                listener(dbapi_connection, False)

    dialect.do_commit, dialect.do_rollback = do_commit, do_rollback
    setattr(dialect, _WRAPPED, listeners)
    return listeners
