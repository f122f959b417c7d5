"""QueryNormalizer: one stable fingerprint per query shape, and what the query reads and writes.

Statements are parsed with sqlglot in the engine's dialect. Literals and every placeholder style
become ``?``, IN-lists and multi-row VALUES of any length collapse to one item, identifiers are
case-folded the way the database folds them, and comments and whitespace disappear, so
``select * from T where id in (1,2)`` and ``SELECT * FROM t WHERE id IN ($1, $2, $3) -- x`` share a
fingerprint. A statement sqlglot cannot parse still gets a fingerprint (of its token-normalised
text) and is marked ``parsed=False``; nothing here ever raises.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from sluice.query.placeholders import positional_placeholders

# sqlglot turns NOW(), RANDOM(), GEN_RANDOM_UUID() ... into these typed nodes.
_VOLATILE_TYPES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "CurrentTimestamp", "CurrentDate", "CurrentTime", "CurrentDatetime", "CurrentTimestampLTZ",
        "Localtime", "Localtimestamp", "Rand", "Randn", "Random", "Uuid", "Sysdate", "UnixSeconds",
    )
    if hasattr(exp, name)
)  # fmt: skip
# Functions sqlglot does not model (exp.Anonymous) that are known not to be volatile; any other
# unknown function might read the clock, a sequence or write data, so its query is not cached.
_STABLE_FUNCTIONS = frozenset(
    {"similarity", "word_similarity", "strict_word_similarity", "jsonb_build_object",
     "json_build_object", "to_tsvector", "to_tsquery", "plainto_tsquery", "ts_rank", "unaccent",
     "split_part", "btrim", "format", "date_part", "age", "json_extract", "json_array_length",
     "ifnull", "iif", "instr", "printf", "strftime", "julianday", "date", "datetime", "time"}
)  # fmt: skip
_CATALOG_PREFIXES = ("pg_", "information_schema", "sqlite_")
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_DDL_NODES = (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable)
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql"}
_FALLBACK_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$\d+|:\w+|%\(\w+\)s|%s|\?|\b\d+(?:\.\d+)?\b
        |\w+|\S""",
    re.S | re.X,
)
_VALUE_NODES = (exp.Literal, exp.Placeholder, exp.Parameter, exp.Boolean, exp.Null, exp.Neg)
_READ_ONLY_KEYWORDS = ("select", "with", "explain", "show", "values", "table")


@dataclass(frozen=True)
class QueryShape:
    """What the normalizer learned about one statement (or ``;``-separated batch).

    :ivar fingerprint: 16 hex digits, equal for statements that differ only in literals,
        placeholder style, IN-list length, case, whitespace or comments.
    :ivar normalized: the normalised SQL the fingerprint is taken of.
    :ivar parsed: False when the SQL could not be parsed (the fingerprint is then a fallback).
    :ivar tables_read: tables the statement reads (lower-case, schema-qualified when written so).
    :ivar tables_written: tables whose rows or definition the statement changes.
    :ivar is_write: the statement changes data or schema; for unparsed SQL, anything that does not
        start with a read-only keyword counts as a write to unknown tables.
    :ivar locking: ``FOR UPDATE``/``FOR SHARE`` and friends.
    :ivar volatile: it calls NOW(), RANDOM(), ... or a function not known to be stable.
    :ivar statement_type: ``select``, ``insert``, ``update``, ``delete``, ``ddl``, ``other``.
    """

    fingerprint: str
    normalized: str
    parsed: bool
    tables_read: frozenset[str] = frozenset()
    tables_written: frozenset[str] = frozenset()
    is_write: bool = False
    locking: bool = False
    volatile: bool = False
    statement_type: str = "other"
    reads_catalog: bool = False
    expressions: tuple[exp.Expression, ...] = field(default=(), compare=False, repr=False)

    @property
    def cacheable(self) -> bool:
        """Whether the result may be cached: a parsed, deterministic, non-locking pure read."""
        return (
            self.parsed
            and self.statement_type == "select"
            and not (self.is_write or self.locking or self.volatile or self.reads_catalog)
        )

    @property
    def explainable(self) -> bool:
        """Whether ``EXPLAIN`` accepts the statement (one parsed DML statement)."""
        return (
            self.parsed
            and len(self.expressions) == 1
            and self.statement_type != "ddl"
            and (self.statement_type != "other")
        )


class QueryNormalizer:
    """Fingerprints and table sets for SQL in one dialect (``postgresql``, ``sqlite``, ...).

    Results are memoised per SQL string: engine hooks see the same statement text over and over
    (the ORM and ``text()`` send parameters separately), so parsing cost is paid once per shape.
    """

    def __init__(self, dialect: str = "postgresql", cache_size: int = 4096) -> None:
        self.dialect = _SQLGLOT_DIALECTS.get(dialect, dialect)
        self.analyze = lru_cache(maxsize=cache_size)(self._analyze)

    def fingerprint(self, sql: str) -> str:
        """The fingerprint of ``sql`` (see :class:`QueryShape`)."""
        return self.analyze(sql).fingerprint

    def _analyze(self, sql: str) -> QueryShape:
        """The :class:`QueryShape` of ``sql``; never raises."""
        if not isinstance(sql, str):
            return _fallback(repr(sql))
        try:
            statements = [
                s
                for s in sqlglot.parse(_rename_positional(sql), read=self.dialect)
                if s is not None
            ]
        except Exception:
            return _fallback(sql)
        if not statements or any(isinstance(s, exp.Command) for s in statements):
            # exp.Command is sqlglot's "I only recognised the first keyword".
            return _fallback(sql)
        try:
            return self._shape(statements)
        except Exception:
            return _fallback(sql)

    def _shape(self, statements: list[Any]) -> QueryShape:
        normalized_parts, read, written = [], set(), set()
        locking = volatile = False
        kinds = set()
        for statement in statements:
            statement = normalize_identifiers(statement.copy(), dialect=self.dialect)
            kinds.add(_statement_type(statement))
            targets = _written_tables(statement)
            written |= targets
            ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
            read |= {_table_name(t) for t in statement.find_all(exp.Table)} - targets - ctes
            locking = (
                locking
                or bool(statement.args.get("locks"))
                or any(select.args.get("locks") for select in statement.find_all(exp.Select))
            )
            volatile = volatile or _is_volatile(statement)
            normalized_parts.append(
                _generalise(statement).sql(dialect=self.dialect, comments=False)
            )
        read.discard("")
        written.discard("")
        catalog = any(name.startswith(_CATALOG_PREFIXES) for name in read | written)
        kind = kinds.pop() if len(kinds) == 1 else "other"
        normalized = "; ".join(normalized_parts)
        return QueryShape(
            fingerprint=_digest(normalized),
            normalized=normalized,
            parsed=True,
            tables_read=frozenset(read),
            tables_written=frozenset(written),
            is_write=bool(written) or kind in {"insert", "update", "delete", "ddl"},
            locking=locking,
            volatile=volatile,
            statement_type=kind,
            reads_catalog=catalog,
            expressions=tuple(statements),
        )


def _rename_positional(sql: str) -> str:
    """``$n`` as ``:pn``: sqlglot's PostgreSQL tokenizer misreads ``$2,$3`` as a dollar quote."""
    pieces, last = [], 0
    for start, end, number in positional_placeholders(sql):
        pieces += [sql[last:start], f":p{number}"]
        last = end
    return "".join(pieces) + sql[last:] if pieces else sql


def _statement_type(statement: exp.Expression) -> str:
    if isinstance(statement, _DDL_NODES):
        return "ddl"
    for node, name in ((exp.Insert, "insert"), (exp.Update, "update"), (exp.Delete, "delete"),
                       (exp.Merge, "update")):  # fmt: skip
        if isinstance(statement, node):
            return name
    if isinstance(statement, exp.Query):
        # A data-modifying CTE (WITH d AS (DELETE ...) SELECT ...) makes the whole statement a write.
        if any(isinstance(node, _WRITE_NODES) for node in statement.find_all(*_WRITE_NODES)):
            return "update"
        return "select"
    return "other"


def _written_tables(statement: exp.Expression) -> set[str]:
    tables: set[str] = set()
    for node in statement.find_all(*_WRITE_NODES, *_DDL_NODES):
        if isinstance(node, exp.TruncateTable):
            tables |= {_table_name(t) for t in node.expressions if isinstance(t, exp.Table)}
            continue
        if isinstance(node, exp.Drop):
            tables |= {_table_name(t) for t in node.find_all(exp.Table)}
            continue
        target = node.this
        if isinstance(target, exp.Index):  # CREATE INDEX ... ON t
            target = target.args.get("table")
        if isinstance(target, exp.Schema):  # INSERT INTO t (a, b) / CREATE TABLE t (...)
            target = target.this
        if isinstance(target, exp.Table):
            tables.add(_table_name(target))
    for select in statement.find_all(exp.Select):
        into = select.args.get("into")
        if into is not None:  # SELECT ... INTO new_table
            tables |= {_table_name(t) for t in into.find_all(exp.Table)}
    return tables


def _table_name(table: exp.Table) -> str:
    parts = [table.catalog, table.db, table.name]
    return ".".join(p for p in parts if p).lower()


def _is_volatile(statement: exp.Expression) -> bool:
    for node in statement.find_all(exp.Func, exp.Literal):
        if isinstance(node, exp.Literal):
            # 'now'::timestamp and datetime('now') read the clock through a string.
            if node.is_string and node.this.strip().lower() in {"now", "today", "tomorrow"}:
                return True
        elif isinstance(node, _VOLATILE_TYPES) or (
            isinstance(node, exp.Anonymous) and str(node.this).lower() not in _STABLE_FUNCTIONS
        ):
            return True
    return False


def _generalise(statement: exp.Expression) -> exp.Expression:
    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, _VALUE_NODES):
            return exp.Placeholder()
        if (
            isinstance(node, exp.In)
            and node.expressions
            and all(isinstance(item, _VALUE_NODES) for item in node.expressions)
        ):
            return exp.In(this=node.this, expressions=[exp.Placeholder()])
        if isinstance(node, exp.Values) and len(node.expressions) > 1:
            first_row = node.expressions[0].transform(replace, copy=True)
            return exp.Values(expressions=[first_row], alias=node.args.get("alias"))
        return node

    return statement.transform(replace, copy=True)


def _fallback(sql: str) -> QueryShape:
    tokens = []
    for match in _FALLBACK_TOKENS.finditer(sql[:100_000]):
        token = match.group(0)
        if token.startswith(("--", "/*")):
            continue
        is_value = token[0] in "'$:%?" or token[0].isdigit()
        tokens.append("?" if is_value else token.lower())
    normalized = " ".join(tokens)
    first = tokens[0] if tokens else ""
    return QueryShape(
        fingerprint=_digest("unparsed:" + normalized),
        normalized=normalized,
        parsed=False,
        # Unknown SQL that is not obviously a read may write anything: treat it as a write.
        is_write=bool(first) and first not in _READ_ONLY_KEYWORDS,
        statement_type="other",
    )


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
