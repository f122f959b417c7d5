"""IndexAnalyzer: index recommendations from plans and parsed queries, validated with HypoPG.

For each slow query: the plan names the tables scanned in full or sorted, the parsed SQL names the
columns (equality first, then one range column, then the sort), and candidates already served by
the leading columns of an existing index are dropped. On PostgreSQL with the ``hypopg`` extension,
each candidate is created as a hypothetical index and kept only if the planner's cost of that very
query (with its captured parameters) falls by at least ``min_improvement`` percent; the measured
fall is ``estimated_improvement``. Elsewhere the estimate is a heuristic and says so.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import SAWarning, SQLAlchemyError
from sqlalchemy.sql.compiler import IdentifierPreparer

from sluice.query.columns import ColumnUse, column_uses
from sluice.query.normalizer import QueryShape
from sluice.query.plans import Plan, PlanExplainer

log = logging.getLogger(__name__)

MAX_COLUMNS = 4
_NAME_JUNK = re.compile(r"[^a-z0-9_]+")
_EXPRESSION_JUNK = re.compile(r"::[a-z ]+|[\s()\"]")


@dataclass(frozen=True)
class IndexCandidate:
    """A possible index: ``columns`` are names or expressions such as ``lower(email)``."""

    table: str
    columns: tuple[str, ...]
    uses: tuple[ColumnUse, ...]


@dataclass(frozen=True)
class QuerySample:
    """A statement as the driver received it, with its parameters, and its plan if known.

    ``generic``: the statement has ``$n`` placeholders and no values (``pg_stat_statements``); it
    is explained with a generic plan. ``calls`` and ``total_ms`` weigh the advice: an index is
    worth the time it would save, ``total_ms * improvement``.
    """

    statement: str
    parameters: Any
    shape: QueryShape
    plan: Plan | None
    calls: int = 1
    total_ms: float = 0.0
    generic: bool = False


class IndexAnalyzer:
    """Turns slow-query samples into index recommendations (see the module docstring)."""

    def __init__(
        self, explainer: PlanExplainer, preparer: IdentifierPreparer, min_improvement: float = 50.0
    ) -> None:
        self.explainer = explainer
        self.preparer = preparer
        self.min_improvement = min_improvement

    # -- candidates ------------------------------------------------------------------------------

    def candidates(self, sample: QuerySample) -> list[IndexCandidate]:
        """Index candidates for one query, before checking existing indexes."""
        uses = [use for statement in sample.shape.expressions for use in column_uses(statement)]
        plan = sample.plan
        if plan is not None:
            # Only tables the plan scans in full (or sorts) need help.
            wanted = plan.full_scans | (
                {u.table for u in uses if u.role == "order"} if plan.sorts else set()
            )
            uses = [u for u in uses if u.table in wanted]
        by_table: dict[str, list[ColumnUse]] = {}
        for use in uses:
            by_table.setdefault(use.table, []).append(use)
        found = []
        for table, table_uses in by_table.items():
            columns = _order_columns(table_uses)
            if columns:
                chosen = tuple(u for u in table_uses if u.column in columns)
                found.append(IndexCandidate(table, columns, chosen))
        return found

    def recommend(self, samples: Iterable[QuerySample]) -> list[dict[str, Any]]:
        """Recommendations in the guide's shape, best first, one per (table, columns)."""
        best: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        if not self.explainer.available:
            return []
        try:
            with self.explainer.connection() as conn:
                existing_cache: dict[str, list[tuple[str, ...]]] = {}
                hypopg = self._hypopg_available(conn)
                for sample in samples:
                    for candidate in self.candidates(sample):
                        if candidate.table not in existing_cache:
                            existing_cache[candidate.table] = _existing_indexes(
                                conn, candidate.table
                            )
                        if _covered(candidate, existing_cache[candidate.table]):
                            continue
                        advice = self._evaluate(conn, sample, candidate, hypopg)
                        key = (candidate.table, candidate.columns)
                        if advice is None:
                            continue
                        previous = best.get(key)
                        if previous is not None:
                            # One index serves every statement it helps: their savings add up.
                            advice["calls"] += previous["calls"]
                            advice["estimated_time_saved_ms"] += previous["estimated_time_saved_ms"]
                            if previous["estimated_improvement"] >= advice["estimated_improvement"]:
                                previous.update(
                                    calls=advice["calls"],
                                    estimated_time_saved_ms=advice["estimated_time_saved_ms"],
                                )
                                continue
                        best[key] = advice
        except SQLAlchemyError as exc:
            log.warning("index analysis failed: %s", exc)
        return sorted(
            best.values(),
            key=lambda a: (-a["estimated_time_saved_ms"], -a["estimated_improvement"]),
        )

    def plan_of(self, conn: Connection, sample: QuerySample) -> Plan | None:
        """The sample's plan now (generic for ``pg_stat_statements`` samples)."""
        if sample.generic:
            return self.explainer.explain_generic(sample.statement, conn)
        return self.explainer.explain(sample.statement, sample.parameters, conn=conn)

    # -- evaluation ------------------------------------------------------------------------------

    def _evaluate(
        self, conn: Connection, sample: QuerySample, candidate: IndexCandidate, hypopg: bool
    ) -> dict[str, Any] | None:
        if hypopg:
            improvement = self._hypothetical_improvement(conn, sample, candidate)
            if improvement is None or improvement < self.min_improvement:
                return None
            method = "hypopg"
        else:
            improvement = self._heuristic_improvement(conn, sample, candidate)
            method = "heuristic"
        return {
            "table_name": candidate.table,
            "columns": list(candidate.columns),
            "create_statement": self.create_statement(candidate),
            "estimated_improvement": round(improvement, 1),
            "method": method,
            "validated": method == "hypopg",
            "fingerprint": sample.shape.fingerprint,
            "query": sample.shape.normalized,
            "calls": sample.calls,
            "estimated_time_saved_ms": round(sample.total_ms * improvement / 100.0, 3),
        }

    def _hypothetical_improvement(
        self, conn: Connection, sample: QuerySample, candidate: IndexCandidate
    ) -> float | None:
        before = self.plan_of(conn, sample)
        if before is None or not before.total_cost:
            return None
        ddl = self.index_definition(candidate, concurrently=False, name=None)
        with conn.begin_nested():  # a failed hypothetical index must not abort the session
            conn.execute(text("SELECT indexrelid FROM hypopg_create_index(:ddl)"), {"ddl": ddl})
            try:
                after = self.plan_of(conn, sample)
            finally:
                conn.execute(text("SELECT hypopg_reset()"))
        if after is None or after.total_cost is None:
            return None
        return max(0.0, (before.total_cost - after.total_cost) / before.total_cost * 100.0)

    def _heuristic_improvement(
        self, conn: Connection, sample: QuerySample, candidate: IndexCandidate
    ) -> float:
        """Without HypoPG: the fraction of the table the plan expects to discard, or 50%."""
        plan = sample.plan
        if plan is None or self.explainer.dialect != "postgresql":
            return 50.0
        raw = plan.raw[0]["Plan"] if plan.raw else {}
        rows = _scan_rows(raw, candidate.table)
        total = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": candidate.table},
        ).scalar()
        if rows is None or not total or total <= 0:
            return 50.0
        return max(0.0, min(99.0, (1.0 - rows / float(total)) * 100.0))

    @staticmethod
    def _hypopg_available(conn: Connection) -> bool:
        if conn.dialect.name != "postgresql":
            return False
        found = conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'")).first()
        return found is not None

    # -- DDL -------------------------------------------------------------------------------------

    def index_name(self, candidate: IndexCandidate) -> str:
        """``ix_<table>_<columns>``, within PostgreSQL's 63-character limit."""
        raw = "_".join(["ix", candidate.table.split(".")[-1], *candidate.columns])
        return _NAME_JUNK.sub("_", raw.lower()).strip("_")[:63]

    def index_definition(
        self, candidate: IndexCandidate, concurrently: bool = True, name: str | None = ""
    ) -> str:
        """``CREATE INDEX`` for the candidate with every identifier quoted by the dialect."""
        quote = self.preparer.quote_identifier
        table = ".".join(quote(part) for part in candidate.table.split("."))
        parts = []
        for column, use in zip(candidate.columns, _uses_for(candidate), strict=True):
            if use is not None and use.expression is not None:
                parts.append(
                    f"({use.expression.sql(dialect=_sqlglot(self.preparer), identify=True)})"
                )
            else:
                parts.append(quote(column))
        postgres = self.preparer.dialect.name == "postgresql"
        head = "CREATE INDEX CONCURRENTLY" if concurrently and postgres else "CREATE INDEX"
        if name is None:  # HypoPG names its hypothetical indexes itself
            return f"{head} ON {table} ({', '.join(parts)})"
        index = quote(name or self.index_name(candidate))
        return f"{head} IF NOT EXISTS {index} ON {table} ({', '.join(parts)})"

    def create_statement(self, candidate: IndexCandidate) -> str:
        """The statement to run: ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""
        return self.index_definition(candidate, concurrently=True)


def _order_columns(uses: list[ColumnUse]) -> tuple[str, ...]:
    columns: list[str] = []
    for role in ("eq", "range", "order"):
        for use in uses:
            if use.role == role and use.column not in columns:
                columns.append(use.column)
                if role == "range":
                    # A B-tree serves one range column; columns after it cannot narrow the scan.
                    return tuple(columns[:MAX_COLUMNS])
    return tuple(columns[:MAX_COLUMNS])


def _uses_for(candidate: IndexCandidate) -> list[ColumnUse | None]:
    by_column = {use.column: use for use in candidate.uses}
    return [by_column.get(column) for column in candidate.columns]


def _existing_indexes(conn: Connection, table: str) -> list[tuple[str, ...]]:
    schema, _, name = table.rpartition(".")
    inspector = inspect(conn)
    try:
        with warnings.catch_warnings():
            # SQLite's reflection skips expression indexes with a warning (they go unmatched).
            warnings.simplefilter("ignore", SAWarning)
            indexes = inspector.get_indexes(name, schema=schema or None)
            primary = inspector.get_pk_constraint(name, schema=schema or None)
            uniques = inspector.get_unique_constraints(name, schema=schema or None)
    except SQLAlchemyError:
        return []
    found = [
        tuple(
            _normalise_expression(column or expression)
            for column, expression in zip(
                index["column_names"],
                index.get("expressions") or index["column_names"],
                strict=False,
            )
        )
        for index in indexes
    ]
    found.append(tuple(primary["constrained_columns"]))
    found += [tuple(u["column_names"]) for u in uniques]
    return found


def _normalise_expression(text_: str | None) -> str:
    return _EXPRESSION_JUNK.sub("", (text_ or "").lower())


def _covered(candidate: IndexCandidate, existing: list[tuple[str, ...]]) -> bool:
    wanted = tuple(_normalise_expression(c) for c in candidate.columns)
    equality = {_normalise_expression(u.column) for u in candidate.uses if u.role == "eq"}
    for index in existing:
        lead = index[: len(wanted)]
        if lead == wanted:
            return True
        # Equality columns may come in any order within the index's leading columns.
        if set(wanted) <= equality and set(lead) == set(wanted):
            return True
    return False


def _scan_rows(node: dict[str, Any], table: str) -> float | None:
    if node.get("Relation Name") == table.split(".")[-1] and node.get("Node Type") == "Seq Scan":
        return float(node.get("Plan Rows", 0))
    for child in node.get("Plans", ()):
        rows = _scan_rows(child, table)
        if rows is not None:
            return rows
    return None


def _sqlglot(preparer: IdentifierPreparer) -> str:
    return {"postgresql": "postgres"}.get(preparer.dialect.name, preparer.dialect.name)
