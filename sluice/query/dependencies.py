"""The dependency map: which cached reads a write to one relation can change.

Read from the database catalog (PostgreSQL: ``pg_class``, ``pg_depend``/``pg_rewrite``,
``pg_constraint``, ``pg_inherits``, ``pg_trigger``, ``pg_proc``; SQLite: ``sqlite_master`` and
``PRAGMA foreign_key_list``), once per optimizer (one per engine and process) and again whenever the
schema generation in the shared store moves (any hooked process's DDL bumps it).

A write to a relation changes the rows of:

- itself, its partitions and partition/inheritance parents and children (rows move between them);
- tables referencing it with ``ON DELETE/UPDATE CASCADE``, ``SET NULL`` or ``SET DEFAULT``;
- for ``TRUNCATE``, every referencing table (``TRUNCATE ... CASCADE``);
- for a view written through, the tables it reads;

transitively, and what reads any changed relation changes with it: views and materialized views
over it (and views over those). A relation with triggers or rewrite rules (other than a view's own),
or whose column defaults call a user function that may write, can write anywhere: writing it
invalidates everything for the database, as do calls of user functions that may write (volatile
functions and procedures), functions the map does not know, and relations it does not know (created
since it was read, temporary tables). Reads of relations the map does not know, of foreign tables,
and of views calling functions that may write are never cached.

Names are table names without schema, lower-case (see :func:`relation_key`): same-named tables of
two schemas share their dependencies, which can only over-invalidate.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from sluice.query.normalizer import QueryNormalizer, QueryShape
from sluice.query.result_cache import EPOCH, GENERATION, relation_key

log = logging.getLogger(__name__)

_Edges = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class DependencyMap:
    """What the catalog says about relations and functions (see the module docstring).

    :ivar generation: the schema generation the map was read at.
    :ivar relations: every known relation's kind: ``table``, ``view``, ``matview``, ``foreign``.
    :ivar changes_with: relation -> relations whose rows change when its rows change.
    :ivar referenced_by: table -> every table with a foreign key to it (for ``TRUNCATE``).
    :ivar readers: relation -> views and materialized views reading it.
    :ivar opaque: relations whose writes may write anywhere (triggers, rules, writing defaults).
    :ivar writing_reads: views whose reading may write (they call functions that may).
    :ivar writing_functions: user functions and procedures that may write.
    :ivar known_functions: every function name the database has (or SQLite's built-ins).
    """

    generation: int
    relations: Mapping[str, str]
    changes_with: _Edges = field(default_factory=dict)
    referenced_by: _Edges = field(default_factory=dict)
    readers: _Edges = field(default_factory=dict)
    opaque: frozenset[str] = frozenset()
    writing_reads: frozenset[str] = frozenset()
    writing_functions: frozenset[str] = frozenset()
    known_functions: frozenset[str] = frozenset()

    def may_write(self, function: str) -> bool:
        """Whether calling ``function`` may write (unknown functions may)."""
        name = function.lower()
        return name in self.writing_functions or name not in self.known_functions

    def cacheable_read(self, shape: QueryShape) -> bool:
        """Whether reading these relations and calling these functions can be cached."""
        for name in shape.relations_read:
            kind = self.relations.get(name)
            if kind is None or kind == "foreign" or name in self.writing_reads:
                return False
        return not any(self.may_write(f) for f in shape.functions)

    def readers_of(self, relations: Iterable[str]) -> frozenset[str]:
        """``relations`` and every view or materialized view reading them, transitively."""
        return frozenset(_closure({relation_key(r) for r in relations}, self.readers))

    def invalidations(self, shape: QueryShape) -> frozenset[str]:
        """The version fields a statement of ``shape`` must bump (``{EPOCH}``: everything)."""
        if shape.writes_unknown or any(self.may_write(f) for f in shape.functions):
            return frozenset({EPOCH})
        if any(name in self.writing_reads for name in shape.relations_read):
            return frozenset({EPOCH})
        if not shape.relations_written:
            # A write whose target could not be named (none) may have written anything.
            return frozenset({EPOCH}) if shape.is_write else frozenset()
        changed: set[str] = set()
        pending = list(shape.relations_written)
        while pending:
            name = pending.pop()
            if name in changed:
                continue
            if name not in self.relations or name in self.opaque:
                return frozenset({EPOCH})
            changed.add(name)
            pending += self.changes_with.get(name, ())
            if shape.truncates:
                pending += self.referenced_by.get(name, ())
        return frozenset(_closure(changed, self.readers))


def _closure(start: Iterable[str], edges: _Edges) -> set[str]:
    found = set(start)
    pending = list(found)
    while pending:
        for nxt in edges.get(pending.pop(), ()):
            if nxt not in found:
                found.add(nxt)
                pending.append(nxt)
    return found


class _EdgeBuilder:
    def __init__(self) -> None:
        self.edges: dict[str, set[str]] = {}

    def add(self, source: str, target: str) -> None:
        source, target = relation_key(source), relation_key(target)
        if source != target:
            self.edges.setdefault(source, set()).add(target)

    def frozen(self) -> dict[str, frozenset[str]]:
        return {k: frozenset(v) for k, v in self.edges.items()}


# -- PostgreSQL -------------------------------------------------------------------------------------

# User schemas only: pg_catalog, information_schema, TOAST and temporary schemas are left out.
_PG_RELATIONS = """
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
# A view's or materialized view's _RETURN rule depends on every relation and function it reads.
_PG_VIEW_SOURCES = """
SELECT DISTINCT v.relname, s.relname FROM pg_rewrite r
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_class'::regclass
JOIN pg_class v ON v.oid = r.ev_class JOIN pg_class s ON s.oid = d.refobjid
WHERE r.rulename = '_RETURN' AND v.oid <> s.oid AND s.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
_PG_VIEW_FUNCTIONS = """
SELECT DISTINCT v.relname, p.proname FROM pg_rewrite r
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_proc'::regclass
JOIN pg_class v ON v.oid = r.ev_class JOIN pg_proc p ON p.oid = d.refobjid
"""
_PG_FOREIGN_KEYS = """
SELECT child.relname, parent.relname, k.confdeltype, k.confupdtype FROM pg_constraint k
JOIN pg_class child ON child.oid = k.conrelid JOIN pg_class parent ON parent.oid = k.confrelid
WHERE k.contype = 'f'
"""
_PG_INHERITANCE = """
SELECT child.relname, parent.relname FROM pg_inherits i
JOIN pg_class child ON child.oid = i.inhrelid JOIN pg_class parent ON parent.oid = i.inhparent
WHERE child.relkind IN ('r', 'p', 'f') AND parent.relkind IN ('r', 'p', 'f')
"""
# Triggers (foreign-key triggers are internal), rules other than a view's own, and column defaults
# or generated columns depending on a volatile user function: writes that reach further.
_PG_OPAQUE = """
SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION
SELECT c.relname FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
WHERE r.rulename <> '_RETURN'
UNION
SELECT c.relname FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid
JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid
    AND d.refclassid = 'pg_proc'::regclass
JOIN pg_proc p ON p.oid = d.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_PG_FUNCTIONS = """
SELECT p.proname, n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND (p.prokind = 'p' OR p.provolatile = 'v')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
"""
_PG_KINDS = {"r": "table", "p": "table", "v": "view", "m": "matview", "f": "foreign"}
_CHANGING_ACTIONS = {"c", "n", "d"}  # CASCADE, SET NULL, SET DEFAULT


def load_postgres(conn: Connection, generation: int) -> DependencyMap:
    """Read the map from a PostgreSQL catalog (any connection: nothing is written)."""

    def rows(sql: str) -> list[Any]:
        return list(conn.execute(text(sql)))

    relations = {relation_key(name): _PG_KINDS[kind] for name, kind in rows(_PG_RELATIONS)}
    changes, referenced, readers = _EdgeBuilder(), _EdgeBuilder(), _EdgeBuilder()
    for view, source in rows(_PG_VIEW_SOURCES):
        readers.add(source, view)
        changes.add(view, source)  # writing through an updatable view writes its tables
    for child, parent, on_delete, on_update in rows(_PG_FOREIGN_KEYS):
        referenced.add(parent, child)
        if on_delete in _CHANGING_ACTIONS or on_update in _CHANGING_ACTIONS:
            changes.add(parent, child)
    for child, parent in rows(_PG_INHERITANCE):
        changes.add(parent, child)
        changes.add(child, parent)
    writing: set[str] = set()
    known: set[str] = set()
    for name, may_write in rows(_PG_FUNCTIONS):
        known.add(name.lower())
        if may_write:
            writing.add(name.lower())
    writing_reads = {
        relation_key(view) for view, function in rows(_PG_VIEW_FUNCTIONS)
        if function.lower() in writing
    }  # fmt: skip
    return DependencyMap(
        generation=generation,
        relations=relations,
        changes_with=changes.frozen(),
        referenced_by=referenced.frozen(),
        readers=readers.frozen(),
        opaque=frozenset(relation_key(name) for (name,) in rows(_PG_OPAQUE)),
        writing_reads=frozenset(writing_reads),
        writing_functions=frozenset(writing),
        known_functions=frozenset(known),
    )


# -- SQLite -----------------------------------------------------------------------------------------


def sqlite_builtin_functions() -> frozenset[str]:
    """The functions every SQLite connection has; any other was registered by the application."""
    probe = sqlite3.connect(":memory:")
    try:
        return frozenset(row[0].lower() for row in probe.execute("PRAGMA function_list"))
    finally:
        probe.close()


def load_sqlite(
    dbapi_connection: Any, generation: int, normalizer: QueryNormalizer
) -> DependencyMap:
    """Read the map from ``sqlite_master`` and ``PRAGMA foreign_key_list`` on a DBAPI connection.

    A raw cursor, so the engine's hooks never see these statements. Application functions
    (``create_function``) are unknown to the map, hence treated as writing.
    """
    cursor = dbapi_connection.cursor()
    try:
        schema = cursor.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchall()
        foreign_keys = {
            name: cursor.execute(f"PRAGMA foreign_key_list({_sqlite_quote(name)})").fetchall()
            for kind, name, _, _ in schema
            if kind == "table"
        }
    finally:
        cursor.close()
    builtins = sqlite_builtin_functions()
    relations: dict[str, str] = {}
    changes, referenced, readers = _EdgeBuilder(), _EdgeBuilder(), _EdgeBuilder()
    opaque: set[str] = set()
    writing_reads: set[str] = set()
    for kind, name, table, sql in schema:
        if kind == "trigger":
            opaque.add(relation_key(table))
            continue
        relations[relation_key(name)] = kind
        if kind == "view":
            # CREATE VIEW v AS SELECT ...: what it reads is what the view reads.
            shape = normalizer.analyze(sql or "")
            if not shape.parsed or shape.functions - builtins:
                writing_reads.add(relation_key(name))
            for source in shape.relations_read:
                readers.add(source, name)
                changes.add(name, source)
    for child, keys in foreign_keys.items():
        for key in keys:
            parent, on_update, on_delete = key[2], str(key[5]).upper(), str(key[6]).upper()
            referenced.add(parent, child)
            if {on_update, on_delete} & {"CASCADE", "SET NULL", "SET DEFAULT"}:
                changes.add(parent, child)
    return DependencyMap(
        generation=generation,
        relations=relations,
        changes_with=changes.frozen(),
        referenced_by=referenced.frozen(),
        readers=readers.frozen(),
        opaque=frozenset(opaque),
        writing_reads=frozenset(writing_reads),
        known_functions=builtins,
    )


def _sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bump_fields(shape: QueryShape, dependencies: DependencyMap | None) -> frozenset[str]:
    """What a statement must invalidate: everything when the map is unavailable and it may write."""
    if shape.schema_change:
        return frozenset({EPOCH, GENERATION})
    if dependencies is not None:
        return dependencies.invalidations(shape)
    if shape.is_write or shape.writes_unknown or shape.functions:
        return frozenset({EPOCH})
    return frozenset()
