"""WorkloadAnalyzer: the whole database's statements from ``pg_stat_statements``, when available.

A process only sees its own statements; ``pg_stat_statements`` counts every client's. When the
extension is installed in the database *and* loaded by the server (``shared_preload_libraries``),
statements are ranked by total execution time across every client, and index advice is computed
for the top ones (explained with a generic plan, since the view keeps no parameter values),
validated with HypoPG as for the process's own slow queries, and weighted by the time each index
would save over all calls. Otherwise the report says why and ranks what this process saw: a
database without the extension is not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from sluice.errors import InvalidInput
from sluice.query.index_advisor import IndexAnalyzer, QuerySample
from sluice.query.normalizer import QueryNormalizer
from sluice.query.plans import PlanExplainer
from sluice.query.slow_queries import SlowQueryAnalyzer

log = logging.getLogger(__name__)

SOURCE_EXTENSION = "pg_stat_statements"
SOURCE_PROCESS = "this process"

_TOP_STATEMENTS = """
SELECT s.queryid, s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    -- utility statements and the probes of sluice itself are not the workload
    AND s.query !~* '^\\s*(begin|commit|rollback|set|show|savepoint|release|deallocate|prepare)'
    AND s.query !~* 'pg_stat_statements|pg_catalog\\.|pg_extension|hypopg|set_config\\('
ORDER BY s.total_exec_time DESC
LIMIT :limit
"""


@dataclass(frozen=True)
class WorkloadStatement:
    """One statement shape of the workload; durations in milliseconds."""

    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    query_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The report row."""
        return {
            "query_id": self.query_id,
            "query": self.query[:2000],
            "calls": self.calls,
            "total_ms": round(self.total_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "rows": self.rows,
        }


class WorkloadAnalyzer:
    """Ranks the workload and advises indexes for it (see the module docstring)."""

    def __init__(
        self,
        explainer: PlanExplainer,
        normalizer: QueryNormalizer,
        index_analyzer: IndexAnalyzer,
        process: SlowQueryAnalyzer,
    ) -> None:
        self.explainer = explainer
        self.normalizer = normalizer
        self.index_analyzer = index_analyzer
        self.process = process

    def report(self, top: int = 10) -> dict[str, Any]:
        """``source``, ``note``, ranked ``statements`` and weighted ``index_recommendations``."""
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise InvalidInput(f"top must be a positive integer, got {top!r}")
        statements, reason = self._from_extension(top)
        if statements is None:
            return self._from_process(top, reason)
        samples = [
            QuerySample(s.query, None, shape, None, s.calls, s.total_ms, generic=True)
            for s in statements
            if (shape := self.normalizer.analyze(s.query)).explainable and not shape.reads_catalog
        ]
        return {
            "source": SOURCE_EXTENSION,
            "note": "ranked by total execution time across every client (pg_stat_statements)",
            "statements": [s.as_dict() for s in statements],
            "index_recommendations": self.index_analyzer.recommend(samples),
        }

    def _from_extension(self, top: int) -> tuple[list[WorkloadStatement] | None, str]:
        if self.explainer.dialect != "postgresql":
            return None, f"pg_stat_statements is PostgreSQL's; this is {self.explainer.dialect}"
        try:
            with self.explainer.connection() as conn:
                reason = _unavailable(conn)
                if reason:
                    return None, reason
                rows = conn.execute(text(_TOP_STATEMENTS), {"limit": top}).fetchall()
        except SQLAlchemyError as exc:
            return None, f"pg_stat_statements could not be read: {_first_line(exc)}"
        return [
            WorkloadStatement(
                query=row.query,
                calls=int(row.calls),
                total_ms=float(row.total_exec_time),
                mean_ms=float(row.mean_exec_time),
                rows=int(row.rows),
                query_id=str(row.queryid),
            )
            for row in rows
        ], ""

    def _from_process(self, top: int, reason: str) -> dict[str, Any]:
        seen = self.process.stats()[:top]
        return {
            "source": SOURCE_PROCESS,
            "note": f"{reason}; ranking only the statements this process ran",
            "statements": [
                WorkloadStatement(s.normalized, s.calls, s.total_ms, s.mean_ms, 0).as_dict()
                for s in seen
            ],
            "index_recommendations": self.process.get_index_recommendations(),
        }


def _unavailable(conn: Connection) -> str:
    """Why ``pg_stat_statements`` cannot be read here; empty when it can."""
    installed = conn.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    ).first()
    if installed is None:
        return (
            "pg_stat_statements is not installed in this database"
            " (CREATE EXTENSION pg_stat_statements, with the library in shared_preload_libraries)"
        )
    loaded = conn.execute(text("SELECT current_setting('shared_preload_libraries')")).scalar()
    if "pg_stat_statements" not in str(loaded):
        return (
            "pg_stat_statements is installed but the server does not load it"
            " (add it to shared_preload_libraries and restart the server)"
        )
    return ""


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
