"""WriteTracker: bump table versions for every write an engine executes.

Hooks the engine, so ORM flushes, ``text()`` and ``exec_driver_sql`` writes and DDL all count. What
a statement invalidates comes from the :class:`~sluice.query.dependencies.DependencyMap` (views over
the table, cascading foreign keys, partitions; everything when a trigger, a user function or
unparsed SQL may write where nobody can say). Those versions are bumped right after the statement
(which already invalidates for autocommit connections), remembered for the transaction, and bumped
again *after* the DBAPI commit: a reader that ran between the first bump and the commit saw the old
rows and may have cached them under the new version; the second bump makes that entry unreachable.
On rollback the pending set is dropped (the first bump only cost a cache miss).

SQLAlchemy's ``commit`` event fires *before* the DBAPI commit, so the after-commit bump wraps the
dialect's ``do_commit``/``do_rollback`` instead (one wrapper per dialect, shared by every tracker);
``COMMIT``/``ROLLBACK`` sent as SQL end the transaction the same way.

The dependency map is read once, on first need, on the explainer's private connection (or, for an
in-memory SQLite database, the hooked connection's own DBAPI connection, through a raw cursor the
hooks do not see), and read again when the schema generation in the store has moved: DDL through
any hooked engine bumps it, at the statement and again after its commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import SQLAlchemyError

from sluice.errors import SluiceError
from sluice.query.dependencies import DependencyMap, bump_fields, load_postgres, load_sqlite
from sluice.query.normalizer import QueryNormalizer, QueryShape
from sluice.query.plans import PlanExplainer
from sluice.query.result_cache import GENERATION, QueryResultCache

log = logging.getLogger(__name__)

_Listener = Callable[[Any, bool], None]
_WRAPPED = "_sluice_transaction_listeners"


class WriteTracker:
    """Invalidates ``cache`` for the writes executed through ``engine`` (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        normalizer: QueryNormalizer,
        cache: QueryResultCache,
        explainer: PlanExplainer,
    ) -> None:
        self.engine = engine
        self.normalizer = normalizer
        self.cache = cache
        self.explainer = explainer
        self._pending: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._map_lock = threading.Lock()
        self._map: DependencyMap | None = None
        self.map_loads = 0
        self._reload_here = True
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

    # -- the dependency map ----------------------------------------------------------------------

    def dependencies(
        self, versions: Mapping[str, int], connection: Connection | None = None
    ) -> DependencyMap | None:
        """The map for the schema generation in ``versions`` (re-read when it moved); None when
        the catalog cannot be read (callers then cache nothing and invalidate everything)."""
        generation = versions.get(GENERATION, 0)
        with self._map_lock:
            current = self._map
            if current is not None and current.generation == generation:
                return current
            try:
                current = self.read_dependency_map(generation, connection)
            except (SQLAlchemyError, SluiceError, OSError) as exc:
                log.warning("could not read the dependency map, caching nothing: %s", exc)
                return None
            if current is not None:
                self._map, self.map_loads = current, self.map_loads + 1
            return current

    def read_dependency_map(
        self, generation: int = 0, connection: Connection | None = None
    ) -> DependencyMap | None:
        """Read the map from the catalog now (None for an in-memory SQLite database without
        ``connection``); :meth:`dependencies` is the memoised way."""
        dialect = self.engine.dialect.name
        if self.explainer.available:
            with self.explainer.connection() as conn:
                if dialect == "postgresql":
                    return load_postgres(conn, generation)
                return load_sqlite(conn.connection.dbapi_connection, generation, self.normalizer)
        if dialect == "sqlite" and connection is not None:
            # In-memory SQLite: no second connection sees the database; read through a raw cursor.
            dbapi = connection.connection.dbapi_connection
            return load_sqlite(dbapi, generation, self.normalizer)
        return None

    def invalidations(
        self, shape: QueryShape, connection: Connection | None = None
    ) -> frozenset[str]:
        """The version fields a statement of ``shape`` bumps (reading the store's versions)."""
        if not (shape.is_write or shape.writes_unknown or shape.functions or shape.schema_change):
            current = self._map
            if current is None or not shape.relations_read & current.writing_reads:
                return frozenset()
        if shape.schema_change:
            return bump_fields(shape, None)
        return bump_fields(shape, self._versions_and_map(connection))

    def _versions_and_map(self, connection: Connection | None) -> DependencyMap | None:
        try:
            versions = self.cache.versions()
        except SluiceError as exc:
            log.error("could not read table versions: %s", exc)
            return None
        return self.dependencies(versions, connection)

    # -- hooks -----------------------------------------------------------------------------------

    def _after_execute(
        self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
        executemany: bool,
    ) -> None:  # fmt: skip
        shape = self.normalizer.analyze(statement)
        if self._reload_here and not self.explainer.available:
            # In-memory SQLite: the hooked connection is the only way to the catalog (and no
            # other process shares the database, so only this tracker's DDL makes it stale).
            self._reload_here = self._versions_and_map(conn) is None
        fields = self.invalidations(shape, conn)
        dbapi_connection = conn.connection.dbapi_connection
        if fields:
            with self._lock:
                self._pending.setdefault(_dbapi_id(dbapi_connection), set()).update(fields)
            self._bump(fields)
        if shape.ends_transaction == "release":
            # SQLite commits when the outermost savepoint is released (and SAVEPOINT may have
            # opened the transaction): what was written so far may be visible now.
            with self._lock:
                written = set(self._pending.get(_dbapi_id(dbapi_connection), ()))
            if written:
                self._bump(written)
        elif shape.ends_transaction is not None:
            self._on_transaction_end(dbapi_connection, shape.ends_transaction == "commit")

    def _on_transaction_end(self, dbapi_connection: Any, committed: bool) -> None:
        with self._lock:
            tables = self._pending.pop(_dbapi_id(dbapi_connection), None)
        if tables and committed:
            self._bump(tables)

    def _bump(self, tables: set[str] | frozenset[str]) -> None:
        if GENERATION in tables:
            self._reload_here = True
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
