"""Which columns a parsed query filters, joins and sorts on, resolved to their tables.

This is the SQL half of index advice (the plan says which tables are scanned; this says by what).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

_EQUALITY = (exp.EQ, exp.In, exp.Is)
_RANGE = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)
# Functions an expression index can serve, e.g. LOWER(email) for a case-insensitive lookup.
_INDEXABLE_FUNCTIONS = (exp.Lower, exp.Upper)


@dataclass(frozen=True)
class ColumnUse:
    """``table`` is filtered by equality (``eq``), by a range (``range``) or sorted (``order``) on
    ``column``, which is a column name or, for ``LOWER(col)``, the expression's SQL."""

    table: str
    column: str
    role: str
    expression: Any = None  # a sqlglot expression


def column_uses(statement: exp.Expression) -> list[ColumnUse]:
    """Every resolvable column use of ``statement``, in order of appearance."""
    uses: list[ColumnUse] = []
    try:
        scopes = traverse_scope(statement)
    except Exception:
        return uses
    for scope in scopes:
        sources = {
            alias: _name(source) for alias, source in scope.sources.items()
            if isinstance(source, exp.Table)
        }  # fmt: skip
        if not sources:
            continue
        node = scope.expression
        predicates = [node.args.get("where")] + [
            j.args.get("on") for j in node.args.get("joins") or ()
        ]
        for predicate in filter(None, predicates):
            for comparison in predicate.find_all(*_EQUALITY, *_RANGE, exp.Like):
                role = "range" if isinstance(comparison, _RANGE) else "eq"
                if isinstance(comparison, exp.Like) and not _is_prefix_pattern(comparison):
                    continue
                if isinstance(comparison, exp.Like):
                    role = "range"
                for side in (comparison.this, comparison.args.get("expression")):
                    use = _resolve(side, sources, role)
                    if use is not None:
                        uses.append(use)
        order = node.args.get("order")
        if order is not None:
            for ordered in order.expressions:
                use = _resolve(ordered.this, sources, "order")
                if use is not None:
                    uses.append(use)
    return uses


def _resolve(node: exp.Expression | None, sources: dict[str, str], role: str) -> ColumnUse | None:
    expression = None
    if isinstance(node, _INDEXABLE_FUNCTIONS) and isinstance(node.this, exp.Column):
        expression, node = node, node.this
    if not isinstance(node, exp.Column):
        return None
    qualifier = node.table
    if qualifier:
        table = sources.get(qualifier)
    elif len(set(sources.values())) == 1:
        table = next(iter(sources.values()))
    else:
        return None  # an unqualified column in a join: its table is unknown without the schema
    if table is None:
        return None
    column = node.name.lower()
    if expression is not None:
        func = type(expression).__name__.lower()
        return ColumnUse(table, f"{func}({column})", role, exp.func(func, exp.column(column)))
    return ColumnUse(table, column, role)


def _is_prefix_pattern(like: exp.Like) -> bool:
    pattern = like.args.get("expression")
    return isinstance(pattern, exp.Literal) and not pattern.this.startswith(("%", "_"))


def _name(table: exp.Table) -> str:
    return ".".join(p for p in (table.db, table.name) if p).lower()
