"""QueryOptimizer: the guide's orchestrator of result caching, slow-query analysis and index advice.

Built on one SQLAlchemy ``Engine`` or ``AsyncEngine``. Constructing it hooks the engine, so every
statement the engine runs is timed and every write invalidates cached results, whoever issued it.
``execute_query`` is a coroutine as in the guide; ``execute_query_sync`` is its twin for plain
threads and Celery tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, TextClause
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sluice.errors import BackendUnavailable, SluiceError
from sluice.query.errors import QueryExecutionError
from sluice.query.index_advisor import IndexAnalyzer
from sluice.query.normalizer import QueryNormalizer, QueryShape
from sluice.query.placeholders import Params, bind
from sluice.query.plans import PlanExplainer
from sluice.query.result_cache import CacheLookup, QueryResultCache, Rows
from sluice.query.slow_queries import SlowQueryAnalyzer
from sluice.query.snapshots import fresh_snapshot
from sluice.query.tracking import WriteTracker
from sluice.query.workload import WorkloadAnalyzer
from sluice.settings import Settings, get_settings
from sluice.store import Store, get_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Prepared:
    clause: TextClause
    params: dict[str, Any]
    shape: QueryShape
    lookup: CacheLookup | None


class QueryOptimizer:
    """Caching, timing and index advice for every query on ``engine``.

    :param engine: an ``Engine`` or ``AsyncEngine`` (PostgreSQL or SQLite).
    :param slow_threshold_ms: statements at least this slow are explained, logged and indexed for.
    :param store: the shared store for results and table versions (default: ``get_store()``).
    :param cache_enabled: default: the ``QUERY_CACHE_ENABLED`` flag.
    :param namespace: identifies the database in the store; default: derived from the URL
        (driver and password excluded), so every process on one database agrees on it.
    :param default_ttl: seconds a result lives when ``cache_ttl`` is not given (a backstop only:
        invalidation does not depend on it).
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        slow_threshold_ms: float = 100,
        *,
        store: Store | None = None,
        settings: Settings | None = None,
        cache_enabled: bool | None = None,
        namespace: str | None = None,
        default_ttl: float = 300.0,
        min_index_improvement: float = 50.0,
    ) -> None:
        settings = settings or get_settings()
        self.engine = engine
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.sync_engine = sync_engine
        self.cache_enabled = (
            settings.query_cache_enabled if cache_enabled is None else cache_enabled
        )
        self.namespace = namespace or database_namespace(sync_engine.url)
        self.normalizer = QueryNormalizer(sync_engine.dialect.name)
        self._cache = QueryResultCache(store or get_store(settings), self.namespace, default_ttl)
        self._explainer = PlanExplainer(sync_engine.url)
        self._index_analyzer = IndexAnalyzer(
            self._explainer, sync_engine.dialect.identifier_preparer, min_index_improvement
        )
        self._slow_analyzer = SlowQueryAnalyzer(
            self.normalizer, self._explainer, self._index_analyzer, slow_threshold_ms
        )
        self._workload = WorkloadAnalyzer(
            self._explainer, self.normalizer, self._index_analyzer, self._slow_analyzer
        )
        # Writes are tracked even with caching off here: other processes may have it on.
        self._tracker = WriteTracker(sync_engine, self.normalizer, self._cache, self._explainer)
        self._slow_analyzer.install(sync_engine)
        self._tracker.install()

    @property
    def cache(self) -> QueryResultCache:
        """The result cache."""
        return self._cache

    @property
    def write_tracker(self) -> WriteTracker:
        """The engine hook that invalidates, with its dependency map."""
        return self._tracker

    @property
    def slow_query_analyzer(self) -> SlowQueryAnalyzer:
        """The per-fingerprint statistics and slow-query plans."""
        return self._slow_analyzer

    # -- execution -------------------------------------------------------------------------------

    async def execute_query(
        self,
        sql: str,
        params: Params = None,
        use_cache: bool = True,
        cache_ttl: float | None = None,
        connection: Connection | AsyncConnection | None = None,
    ) -> tuple[Rows, float]:
        """Run ``sql`` and return ``(rows, duration_ms)``; rows are dicts by column name.

        ``params`` fill ``$1..$n`` (a sequence, or a mapping's values in order) or ``:name``
        placeholders. Reads are served from the cache when ``use_cache`` and the query is
        cacheable; writes are committed (unless run on the caller's ``connection``) and invalidate
        the tables they touch. Raises :class:`~sluice.query.QueryParameterError` or
        :class:`~sluice.query.QueryExecutionError` with the database's message.
        """
        if not isinstance(self.engine, AsyncEngine):
            if isinstance(connection, AsyncConnection):
                connection = connection.sync_connection
            return await asyncio.to_thread(
                self.execute_query_sync, sql, params, use_cache, cache_ttl, connection
            )
        started = time.perf_counter()
        sync_connection = (
            connection.sync_connection if isinstance(connection, AsyncConnection) else connection
        )
        # A caller's async connection cannot be asked about its snapshot from here: uncached.
        use_cache = use_cache and not isinstance(connection, AsyncConnection)
        prepared = self._prepare(sql, params, use_cache, sync_connection)
        if prepared.lookup is not None and prepared.lookup.rows is not None:
            return prepared.lookup.rows, _since(started)
        try:
            if isinstance(connection, AsyncConnection):
                rows = _rows(await connection.execute(prepared.clause, prepared.params))
            else:
                async with self.engine.begin() as conn:
                    rows = _rows(await conn.execute(prepared.clause, prepared.params))
        except StatementError as exc:
            raise _query_error(exc) from None
        self._remember(prepared, rows, cache_ttl)
        return rows, _since(started)

    def execute_query_sync(
        self,
        sql: str,
        params: Params = None,
        use_cache: bool = True,
        cache_ttl: float | None = None,
        connection: Connection | None = None,
    ) -> tuple[Rows, float]:
        """The synchronous twin of :meth:`execute_query` (same arguments and result)."""
        if isinstance(self.engine, AsyncEngine) and connection is None:
            raise SluiceError("this optimizer wraps an AsyncEngine: await execute_query() instead")
        started = time.perf_counter()
        prepared = self._prepare(sql, params, use_cache, connection)
        if prepared.lookup is not None and prepared.lookup.rows is not None:
            return prepared.lookup.rows, _since(started)
        try:
            if connection is not None:
                rows = _rows(connection.execute(prepared.clause, prepared.params))
            else:
                with self.sync_engine.begin() as conn:
                    rows = _rows(conn.execute(prepared.clause, prepared.params))
        except StatementError as exc:
            raise _query_error(exc) from None
        self._remember(prepared, rows, cache_ttl)
        return rows, _since(started)

    def _prepare(
        self, sql: str, params: Params, use_cache: bool, connection: Connection | None
    ) -> _Prepared:
        clause, bound = bind(sql, params)
        shape = self.normalizer.analyze(sql)
        lookup = None
        if use_cache and self.cache_enabled and shape.cacheable and self._fresh(connection):
            try:
                versions = self._cache.versions()
            except BackendUnavailable as exc:
                log.warning("query cache unavailable, running uncached: %s", exc)
            else:
                dependencies = self._tracker.dependencies(versions, connection)
                if dependencies is not None and dependencies.cacheable_read(shape):
                    lookup = self._cache.lookup(sql, shape.relations_read, bound, versions)
        return _Prepared(clause, bound, shape, lookup)

    def _fresh(self, connection: Connection | None) -> bool:
        """Whether a read on ``connection`` may use the cache: not on an unhooked engine (its
        writes are unseen), not after its transaction wrote (it must read its own writes), not
        in a snapshot that may predate a commit (see :mod:`sluice.query.snapshots`)."""
        if connection is None:
            return True
        return (
            connection.engine.pool is self.sync_engine.pool
            and not self._tracker.has_pending_writes(connection)
            and fresh_snapshot(connection)
        )

    def _remember(self, prepared: _Prepared, rows: Rows, ttl: float | None) -> None:
        if prepared.lookup is not None:
            self._cache.store_rows(prepared.lookup, rows, ttl)

    # -- invalidation ----------------------------------------------------------------------------

    async def invalidate_cache_for_table(self, table: str) -> None:
        """Invalidate every cached result that read ``table`` (or a view over it), in every
        process."""
        await asyncio.to_thread(self.invalidate_cache_for_table_sync, table)

    def invalidate_cache_for_table_sync(self, table: str) -> None:
        """The synchronous twin of :meth:`invalidate_cache_for_table`."""
        self._cache.invalidate_table(table)  # validates the name
        try:
            dependencies = self._tracker.dependencies(self._cache.versions())
        except BackendUnavailable as exc:
            log.warning("could not read table versions: %s", exc)
            return
        if dependencies is not None:
            self._cache.bump(dependencies.readers_of([table]))

    async def invalidate_all(self) -> None:
        """Invalidate every cached result of this database, in every process."""
        await asyncio.to_thread(self._cache.invalidate_all)

    def invalidate_all_sync(self) -> None:
        """The synchronous twin of :meth:`invalidate_all`."""
        self._cache.invalidate_all()

    # -- reporting -------------------------------------------------------------------------------

    def get_optimization_report(self, top: int = 10) -> dict[str, Any]:
        """The guide's report: cache and query statistics, slowest queries, index advice."""
        try:
            cache_stats: dict[str, Any] = self._cache.stats()
        except BackendUnavailable as exc:
            cache_stats = {"error": str(exc)}
        cache_stats["enabled"] = self.cache_enabled
        return {
            "cache_stats": cache_stats,
            "query_stats": self._slow_analyzer.query_stats(),
            "top_slow_queries": [s.as_dict() for s in self._slow_analyzer.slow_queries()[:top]],
            "index_recommendations": self._slow_analyzer.get_index_recommendations(),
        }

    def get_workload_report(self, top: int = 10) -> dict[str, Any]:
        """The whole database's statements ranked by total time, with index advice weighted by
        the time it would save: from ``pg_stat_statements`` when the server has it, else (with a
        ``note`` saying why) from what this process saw. See :mod:`sluice.query.workload`."""
        return self._workload.report(top)

    def close(self) -> None:
        """Remove the engine hooks and the explainer's connections."""
        self._slow_analyzer.uninstall()
        self._tracker.uninstall()
        self._explainer.dispose()


def database_namespace(url: URL) -> str:
    """A short, password-free identity of the database ``url`` points at (driver excluded)."""
    identity = url.set(drivername=url.get_backend_name(), password=None)
    rendered = identity.render_as_string(hide_password=True)
    return hashlib.blake2b(rendered.encode(), digest_size=8).hexdigest()


def _rows(result: CursorResult[Any]) -> Rows:
    if not result.returns_rows:
        return []
    return [dict(row._mapping) for row in result]


def _query_error(exc: StatementError) -> SluiceError:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return BackendUnavailable(f"the database connection failed: {exc.orig}")
    message = str(exc.orig if exc.orig is not None else exc).strip()
    return QueryExecutionError(f"the database rejected the statement: {message}")


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
