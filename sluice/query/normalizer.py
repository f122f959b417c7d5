"""QueryNormalizer: one stable fingerprint per query shape, and what the query reads and writes.

Statements are parsed with sqlglot in the engine's dialect. Literals and every placeholder style
become ``?``, IN-lists and multi-row VALUES of any length collapse to one item, identifiers are
case-folded the way the database folds them, and comments and whitespace disappear, so
``select * from T where id in (1,2)`` and ``SELECT * FROM t WHERE id IN ($1, $2, $3) -- x`` share a
fingerprint. A statement sqlglot cannot parse still gets a fingerprint (of its token-normalised
text) and is marked ``parsed=False``; nothing here ever raises.

Parse cost is bounded: a statement longer than ``max_parse_chars`` is first shrunk by cutting its
literal lists to one item (:mod:`sluice.query.large_statements`) and is treated as unparsed when
that is not enough, and the memo of shapes is bounded in bytes, not entries.

Besides tables, a shape says what invalidation needs to know: the functions it calls that sqlglot
does not know (they may write), whether it is DDL (the dependency map must be re-read), whether it
truncates (``TRUNCATE ... CASCADE`` reaches every referencing table), whether it may write tables
nobody can name (``CALL``, ``DO``, unparsed writes), and whether it ends the transaction itself
(``COMMIT``/``ROLLBACK`` sent as SQL).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from sluice.query.large_statements import reduce_value_lists
from sluice.query.parse_cache import ByteBudgetCache
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
_SCHEMA_NODES = (exp.Create, exp.Drop, exp.Alter)
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql"}
_FALLBACK_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$\d+|:\w+|%\(\w+\)s|%s|\?|\b\d+(?:\.\d+)?\b
        |\w+|\S""",
    re.S | re.X,
)
_VALUE_NODES = (exp.Literal, exp.Placeholder, exp.Parameter, exp.Boolean, exp.Null, exp.Neg)
# Unparsed SQL starting with one of these, naming no write keyword and calling no function, does
# not change table data: reads, transaction control, session settings and maintenance.
_NON_WRITE_KEYWORDS = frozenset(
    {"select", "with", "explain", "show", "values", "table", "begin", "start", "commit", "end",
     "rollback", "abort", "savepoint", "release", "set", "reset", "pragma", "discard",
     "deallocate", "listen", "unlisten", "notify", "fetch", "close", "move", "analyze", "vacuum",
     "checkpoint", "lock"}
)  # fmt: skip
_WRITE_KEYWORDS = frozenset(
    {"insert", "update", "delete", "merge", "truncate", "copy", "call", "do", "execute", "create",
     "alter", "drop", "grant", "revoke", "refresh", "import", "replace", "upsert", "load",
     "cluster", "reindex", "security", "comment", "into"}
)  # fmt: skip
_SCHEMA_KEYWORDS = frozenset({"create", "alter", "drop", "comment", "grant", "revoke", "security"})
# Words that may precede "(" without being a function call.
_NOT_CALLS = frozenset(
    {"in", "values", "exists", "any", "all", "some", "array", "as", "on", "using", "from", "join",
     "where", "and", "or", "not", "select", "over", "filter", "within", "cast", "row", "lateral",
     "table", "with", "by", "when", "then", "else", "case", "is", "between", "like", "ilike",
     "union", "intersect", "except", "group", "order", "having", "limit", "offset", "returning",
     "count", "sum", "min", "max", "avg", "lower", "upper", "coalesce", "nullif", "length",
     "explain", "analyze", "vacuum", "set", "to", "distinct", "partition", "window", "range",
     "rows", "if", "recursive", "materialized", "nulls", "first", "last", "asc", "desc"}
)  # fmt: skip
_WORD = re.compile(r"[A-Za-z_]\w*")
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")
# How many bytes of memo one character of parsed SQL costs (a sqlglot tree is ~100x its text).
_BYTES_PER_PARSED_CHAR = 100


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
    :ivar relations_read: ``tables_read`` without schema (what table versions are keyed by: one
        table however a statement names it; same-named tables of two schemas share a version).
    :ivar relations_written: ``tables_written`` without schema.
    :ivar functions: calls of functions sqlglot does not know (lower-case, without schema): they
        may be user functions that write.
    :ivar truncates: a ``TRUNCATE`` (which may cascade to every referencing table).
    :ivar schema_change: DDL (other than ``TRUNCATE``): the dependency map must be re-read.
    :ivar writes_unknown: may write tables that cannot be named (``CALL``, ``DO``, an unparsed
        statement that is not evidently read-only, ``COMMIT PREPARED``).
    :ivar ends_transaction: ``commit`` or ``rollback`` when the statement itself ends the
        transaction (``COMMIT`` sent as SQL); ``PREPARE TRANSACTION`` counts as a rollback here
        (the connection leaves the transaction; ``COMMIT PREPARED`` invalidates everything);
        ``release`` for ``RELEASE SAVEPOINT``, which on SQLite commits when the savepoint is the
        outermost one.
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
    relations_read: frozenset[str] = frozenset()
    relations_written: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    truncates: bool = False
    schema_change: bool = False
    writes_unknown: bool = False
    ends_transaction: str | None = None

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

    :param max_parse_chars: longer statements are reduced (literal lists cut) before parsing and
        treated as unparsed when still longer.
    :param cache_bytes: the memo's budget, charged for each shape's text and syntax tree.
    """

    def __init__(
        self,
        dialect: str = "postgresql",
        max_parse_chars: int = 32_768,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.dialect = _SQLGLOT_DIALECTS.get(dialect, dialect)
        self.max_parse_chars = max_parse_chars
        self.cache: ByteBudgetCache[QueryShape] = ByteBudgetCache(
            self._analyze, _shape_bytes, cache_bytes
        )

    def analyze(self, sql: str) -> QueryShape:
        """The :class:`QueryShape` of ``sql`` (memoised); never raises."""
        if not isinstance(sql, str):
            return _fallback(repr(sql))
        return self.cache(sql)

    def fingerprint(self, sql: str) -> str:
        """The fingerprint of ``sql`` (see :class:`QueryShape`)."""
        return self.analyze(sql).fingerprint

    def _analyze(self, sql: str) -> QueryShape:
        text = sql
        if len(sql) > self.max_parse_chars:
            reduced = reduce_value_lists(sql)
            if reduced is None or len(reduced) > self.max_parse_chars:
                return _fallback(sql)
            text = reduced
        try:
            statements = [
                s
                for s in sqlglot.parse(_rename_positional(text), read=self.dialect)
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
        relations_read: set[str] = set()
        relations_written: set[str] = set()
        functions: set[str] = set()
        locking = volatile = truncates = schema_change = False
        ends: str | None = None
        kinds = set()
        for statement in statements:
            statement = normalize_identifiers(statement.copy(), dialect=self.dialect)
            kinds.add(_statement_type(statement))
            targets = _written_tables(statement)
            written |= {_table_name(t) for t in targets}
            relations_written |= {t.name.lower() for t in targets}
            ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
            target_names = {_table_name(t) for t in targets}
            for table in statement.find_all(exp.Table):
                if not isinstance(table.this, exp.Identifier):
                    continue  # FROM generate_series(...) / FROM my_function(...): a call
                name = _table_name(table)
                if name in target_names or name in ctes:
                    continue
                read.add(name)
                relations_read.add(table.name.lower())
            functions |= {
                str(node.this).lower()
                for node in statement.find_all(exp.Anonymous)
                if str(node.this).lower() not in _STABLE_FUNCTIONS
            }
            locking = (
                locking
                or bool(statement.args.get("locks"))
                or any(select.args.get("locks") for select in statement.find_all(exp.Select))
            )
            volatile = volatile or _is_volatile(statement)
            truncates = truncates or any(statement.find_all(exp.TruncateTable))
            schema_change = schema_change or any(statement.find_all(*_SCHEMA_NODES))
            ends = _transaction_end(statement) or ends
            normalized_parts.append(
                _generalise(statement).sql(dialect=self.dialect, comments=False)
            )
        read.discard("")
        written.discard("")
        relations_read.discard("")
        relations_written.discard("")
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
            relations_read=frozenset(relations_read),
            relations_written=frozenset(relations_written),
            functions=frozenset(functions),
            truncates=truncates,
            schema_change=schema_change,
            ends_transaction=ends,
        )


def _shape_bytes(sql: str, shape: QueryShape) -> int:
    # The key is digested when long; the tree is only held for parsed (hence bounded) text.
    parsed = len(shape.normalized) * _BYTES_PER_PARSED_CHAR if shape.parsed else 0
    return 200 + min(len(sql), 256) + 2 * len(shape.normalized) + parsed


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


def _written_tables(statement: exp.Expression) -> list[exp.Table]:
    tables: list[exp.Table] = []
    for node in statement.find_all(*_WRITE_NODES, *_DDL_NODES, exp.Copy):
        if isinstance(node, exp.TruncateTable):
            tables += [t for t in node.expressions if isinstance(t, exp.Table)]
            continue
        if isinstance(node, exp.Drop):
            tables += list(node.find_all(exp.Table))
            continue
        if isinstance(node, exp.Copy) and not node.args.get("kind"):
            continue  # COPY ... TO reads
        target = node.this
        if isinstance(target, exp.Index):  # CREATE INDEX ... ON t
            target = target.args.get("table")
        if isinstance(target, exp.Schema):  # INSERT INTO t (a, b) / CREATE TABLE t (...)
            target = target.this
        if isinstance(target, exp.Table):
            tables.append(target)
    for select in statement.find_all(exp.Select):
        into = select.args.get("into")
        if into is not None:  # SELECT ... INTO new_table
            tables += list(into.find_all(exp.Table))
    return tables


def _transaction_end(statement: exp.Expression) -> str | None:
    if isinstance(statement, exp.Commit):
        return "commit"
    if isinstance(statement, exp.Rollback) and not statement.args.get("savepoint"):
        return "rollback"
    return None


def _table_name(table: exp.Table) -> str:
    parts = [table.catalog, table.db, table.name]
    return ".".join(p for p in parts if p).lower()


def _is_volatile(statement: exp.Expression) -> bool:
    if any(statement.find_all(exp.TableSample)):  # a random sample of rows
        return True
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
    lead = [t for t in tokens[:4] if t[0].isalpha()]
    first, second = [*lead, "", ""][:2]
    ends: str | None = None
    writes = _may_write(sql, first)
    if first == "commit" and second == "prepared":
        writes = True  # another connection's prepared transaction lands: its writes are unknown
    elif first in {"commit", "end"}:
        ends = "commit"
    elif first in {"rollback", "abort"} and second not in {"to", "prepared"}:
        ends = "rollback"
    elif first == "release":
        ends = "release"
    elif first == "prepare" and second == "transaction":
        ends, writes = "rollback", False  # the transaction leaves this connection
    return QueryShape(
        fingerprint=_digest("unparsed:" + normalized),
        normalized=normalized,
        parsed=False,
        # Unknown SQL that is not evidently read-only may write anything.
        is_write=writes,
        statement_type="other",
        schema_change=first in _SCHEMA_KEYWORDS,
        writes_unknown=writes,
        ends_transaction=ends,
    )


def _may_write(sql: str, first: str) -> bool:
    """Whether unparsed ``sql`` may change table data (scanning all of it, strings included)."""
    if first not in _NON_WRITE_KEYWORDS:
        return bool(first)
    lowered = sql.lower()
    words = set(_WORD.findall(lowered))
    if words & _WRITE_KEYWORDS or (first == "explain" and "analyze" in words):
        return True
    # Any function call might be a user function that writes.
    return any(name not in _NOT_CALLS for name in _CALL.findall(lowered))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
