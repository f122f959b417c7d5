"""Execution plans: ``EXPLAIN (FORMAT JSON)`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite.

Plans are taken on a connection of their own (never the application's, whose transaction an EXPLAIN
error would abort), inside a transaction that is always rolled back, under a ``statement_timeout``
on PostgreSQL. Plain EXPLAIN only: nothing is ever executed, so explaining a write is harmless.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

# Async drivers have a synchronous sibling the explainer can use.
_SYNC_DRIVERS = {"postgresql+asyncpg": "postgresql+psycopg", "sqlite+aiosqlite": "sqlite"}
_DOLLAR = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class PlanNode:
    """One step of a plan: ``kind`` is e.g. ``Seq Scan``/``Index Scan``/``Sort`` or ``SCAN``."""

    kind: str
    relation: str | None = None
    filtered: bool = False
    index: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    """A parsed plan: its nodes, the planner's total cost (PostgreSQL) and the raw output."""

    nodes: tuple[PlanNode, ...]
    total_cost: float | None = None
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def full_scans(self) -> set[str]:
        """Tables read by a sequential/full scan (with a filter on PostgreSQL)."""
        return {
            n.relation
            for n in self.nodes
            if n.relation and ((n.kind == "Seq Scan" and n.filtered) or n.kind == "SCAN")
        }

    @property
    def sorts(self) -> bool:
        """Whether the plan sorts rows itself (no index delivers them in order)."""
        return any(n.kind in {"Sort", "Incremental Sort", "TEMP B-TREE"} for n in self.nodes)

    def summary(self) -> str:
        """One line for logs: node kinds with their tables, and the cost."""
        parts = [f"{n.kind} on {n.relation}" if n.relation else n.kind for n in self.nodes[:8]]
        cost = f"; cost {self.total_cost:.1f}" if self.total_cost is not None else ""
        return (" > ".join(parts) or "no plan steps") + cost


class PlanExplainer:
    """Explains statements captured by the engine hooks, on a private NullPool engine."""

    def __init__(self, url: URL, statement_timeout_ms: int = 5000) -> None:
        self.dialect = url.get_backend_name()
        self.statement_timeout_ms = statement_timeout_ms
        driver = _SYNC_DRIVERS.get(url.drivername)
        self._url = url.set(drivername=driver) if driver else url
        self._engine: Engine | None = None

    @property
    def available(self) -> bool:
        """False for databases a second connection cannot see (SQLite ``:memory:``)."""
        return self.dialect == "postgresql" or (
            self.dialect == "sqlite" and self._url.database not in (None, "", ":memory:")
        )

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in a transaction that is rolled back on exit, with the timeout set."""
        if self._engine is None:
            self._engine = create_engine(self._url, poolclass=NullPool)
        with self._engine.connect() as conn:
            transaction = conn.begin()
            try:
                if self.dialect == "postgresql":
                    # lock_timeout too: the caller's own open transaction may hold a lock on the
                    # table (ALTER TABLE then SELECT), and waiting for it would wait for ourselves.
                    conn.execute(
                        text(
                            "SELECT set_config('statement_timeout', :timeout, true),"
                            " set_config('lock_timeout', :lock_timeout, true)"
                        ),
                        {
                            "timeout": f"{int(self.statement_timeout_ms)}ms",
                            "lock_timeout": f"{min(int(self.statement_timeout_ms), 200)}ms",
                        },
                    )
                yield conn
            finally:
                transaction.rollback()

    def explain(
        self, statement: str, parameters: Any = None, conn: Connection | None = None
    ) -> Plan | None:
        """The plan of ``statement`` with its DBAPI ``parameters``; None when it cannot be had."""
        if not self.available:
            return None
        if isinstance(parameters, list):  # executemany: the first row is representative
            parameters = parameters[0] if parameters else None
        try:
            if conn is not None:
                return self._explain(conn, statement, parameters)
            with self.connection() as own:
                return self._explain(own, statement, parameters)
        except SQLAlchemyError as exc:
            log.debug("could not explain %r: %s", statement[:200], exc)
            return None

    def explain_generic(self, statement: str, conn: Connection) -> Plan | None:
        """The generic plan of a statement written with ``$n`` placeholders and no values (as
        ``pg_stat_statements`` reports them), PostgreSQL only; None when it cannot be had.

        Prepared and explained with ``plan_cache_mode = force_generic_plan``, in a savepoint of
        ``conn``'s transaction; prepared afresh each time so hypothetical indexes count.
        """
        if self.dialect != "postgresql":
            return None
        count = max((int(n) for n in _DOLLAR.findall(statement)), default=0)
        arguments = f"({', '.join(['NULL'] * count)})" if count else ""
        try:
            with conn.begin_nested():
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
                conn.exec_driver_sql(f"PREPARE sluice_generic AS {statement}")
                try:
                    return self._explain(conn, f"EXECUTE sluice_generic{arguments}", None)
                finally:
                    conn.exec_driver_sql("DEALLOCATE sluice_generic")
        except SQLAlchemyError as exc:
            log.debug("could not explain %r: %s", statement[:200], exc)
            return None

    def _explain(self, conn: Connection, statement: str, parameters: Any) -> Plan:
        prefix = "EXPLAIN (FORMAT JSON) " if self.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
        result = conn.exec_driver_sql(prefix + statement, parameters or ())
        rows = result.fetchall()
        if self.dialect == "postgresql":
            raw = rows[0][0]
            document = json.loads(raw) if isinstance(raw, str) else raw
            root = document[0]["Plan"]
            return Plan(tuple(_pg_nodes(root)), float(root.get("Total Cost", 0.0)), document)
        return Plan(
            tuple(_sqlite_node(str(row[-1])) for row in rows), None, [tuple(r) for r in rows]
        )

    def dispose(self) -> None:
        """Close the private engine."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _pg_nodes(node: dict[str, Any]) -> Iterator[PlanNode]:
    yield PlanNode(
        kind=node.get("Node Type", "?"),
        relation=node.get("Relation Name"),
        filtered="Filter" in node,
        index=node.get("Index Name"),
        detail=str(node.get("Filter") or node.get("Sort Key") or node.get("Index Cond") or ""),
    )
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child)


def _sqlite_node(detail: str) -> PlanNode:
    words = detail.split()
    if words[:1] == ["SCAN"] and len(words) > 1:
        # "SCAN t" is a full scan; "SCAN t USING INDEX i" walks an index in order.
        using_index = "USING" in words
        return PlanNode(kind="INDEX SCAN" if using_index else "SCAN", relation=words[1].lower(),
                        detail=detail)  # fmt: skip
    if words[:1] == ["SEARCH"] and len(words) > 1:
        return PlanNode(kind="SEARCH", relation=words[1].lower(), detail=detail)
    if "TEMP B-TREE" in detail:
        return PlanNode(kind="TEMP B-TREE", detail=detail)
    return PlanNode(kind=words[0] if words else "?", detail=detail)
