"""The query-cache property: every cached read equals the same read uncached, whatever came before.

Shared by the SQLite (unit) and PostgreSQL (integration) property tests. A schema with every way a
write can reach a read it does not name (a view, an updatable view, a cascading foreign key, a
trigger writing another table, a function and a procedure writing another table, partitions,
inheritance, a materialized view), and a catalogue of reads and writes spelling tables every way
(plain, schema-qualified, quoted, upper case). Hypothesis generates sequences of those writes and
reads, inside and outside transactions with savepoints, rollbacks and commits, through the
optimizer and through the plain hooked engine; every read is run through the cache and uncached
in the same context and the two must be equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, RootTransaction, event, text

from sluice.query import QueryOptimizer


@dataclass(frozen=True)
class Statement:
    """One read or write: SQL with ``:a``/``:b`` binds (``{schema}`` is the schema's name)."""

    name: str
    sql: str
    params: Callable[[int, int], dict[str, Any]] = lambda a, b: {"a": a, "b": b}
    # False for writes that would block the test's other connections (exclusive locks, or an
    # SQLite function writing on a connection of its own).
    in_transaction: bool = True


@dataclass
class Dialect:
    """Everything dialect-specific: schema, reads and writes."""

    name: str
    setup: list[str]
    reads: list[Statement]
    writes: list[Statement]
    reset: list[str] = field(default_factory=list)


REKEY = (
    "UPDATE parent SET id = :b WHERE id = :a AND NOT EXISTS (SELECT 1 FROM parent WHERE id = :b)"
)
_COMMON_READS = [
    Statement("parent", "SELECT id, name FROM parent ORDER BY id"),
    Statement("parent qualified", 'SELECT id, name FROM "{schema}".parent ORDER BY id'),
    Statement("parent quoted", 'SELECT "id", "name" FROM "parent" ORDER BY "id"'),
    Statement("parent upper", "SELECT ID, NAME FROM PARENT ORDER BY ID"),
    Statement("parent by literal", "SELECT name FROM parent WHERE id = {a}"),
    Statement("parent by parameter", "SELECT name FROM parent WHERE id = :a"),
    Statement("child", "SELECT id, parent_id, val FROM child ORDER BY id"),
    Statement("child through join view", "SELECT id, val, name FROM child_view ORDER BY id"),
    Statement("child through simple view", "SELECT id, val FROM child_simple ORDER BY id"),
    Statement("audit count", "SELECT count(*) AS n FROM audit"),
    Statement("audit notes", "SELECT note FROM audit ORDER BY id"),
    Statement("tracked", "SELECT id, v FROM tracked ORDER BY id"),
]

POSTGRES = Dialect(
    name="postgresql",
    setup=[
        "CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE child (id int PRIMARY KEY,"
        " parent_id int REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE, val int)",
        "CREATE TABLE audit (id serial PRIMARY KEY, note text)",
        "CREATE TABLE tracked (id int PRIMARY KEY, v int)",
        # NO ACTION: only TRUNCATE ... CASCADE reaches it (its parent row 9 is never written).
        "CREATE TABLE pinned (id int PRIMARY KEY, parent_id int REFERENCES parent (id))",
        "CREATE VIEW child_view AS"
        " SELECT c.id, c.val, p.name FROM child c JOIN parent p ON p.id = c.parent_id",
        "CREATE VIEW child_simple AS SELECT id, val FROM child",
        "CREATE MATERIALIZED VIEW parent_names AS SELECT name FROM parent",
        "CREATE TABLE measure (id int, region text, v int) PARTITION BY LIST (region)",
        "CREATE TABLE measure_eu PARTITION OF measure FOR VALUES IN ('eu')",
        "CREATE TABLE measure_us PARTITION OF measure FOR VALUES IN ('us')",
        "CREATE TABLE base_items (id int, v int)",
        "CREATE TABLE special_items () INHERITS (base_items)",
        "CREATE FUNCTION note_tracked() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO audit (note) VALUES ('tracked ' || NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER tracked_audit AFTER INSERT OR UPDATE ON tracked"
        " FOR EACH ROW EXECUTE FUNCTION note_tracked()",
        "CREATE FUNCTION log_note(n text) RETURNS int LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO audit (note) VALUES (n); RETURN 1; END $$",
        "CREATE PROCEDURE add_note(n text) LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO audit (note) VALUES (n); END $$",
    ],
    reads=[
        *_COMMON_READS,
        Statement("matview", "SELECT name FROM parent_names ORDER BY name"),
        Statement("referencing table (NO ACTION)", "SELECT id, parent_id FROM pinned ORDER BY id"),
        Statement("partitioned parent", "SELECT id, region, v FROM measure ORDER BY id, region"),
        Statement("one partition", "SELECT id, v FROM measure_eu ORDER BY id"),
        Statement("inheritance parent", "SELECT id, v FROM base_items ORDER BY id, v"),
    ],
    writes=[
        Statement(
            "upsert parent",
            "INSERT INTO parent (id, name) VALUES (:a, :b)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            lambda a, b: {"a": a, "b": f"p{b}"},
        ),
        Statement(
            "rename parent, schema-qualified",
            'UPDATE "{schema}".parent SET name = :b WHERE id = :a',
            lambda a, b: {"a": a, "b": f"q{b}"},
        ),
        Statement(
            "rename parent, quoted",
            'UPDATE "parent" SET "name" = :b WHERE "id" = :a',
            lambda a, b: {"a": a, "b": f"r{b}"},
        ),
        Statement(
            "rename parent, upper case",
            "UPDATE PARENT SET NAME = :b WHERE ID = :a",
            lambda a, b: {"a": a, "b": f"u{b}"},
        ),
        Statement("re-key parent (ON UPDATE CASCADE)", REKEY, lambda a, b: {"a": a, "b": b + 100}),
        Statement("delete parent (ON DELETE CASCADE)", "DELETE FROM parent WHERE id = :a"),
        Statement(
            "insert child",
            "INSERT INTO child (id, parent_id, val) SELECT :b, :a, :b"
            " WHERE EXISTS (SELECT 1 FROM parent WHERE id = :a) ON CONFLICT (id) DO NOTHING",
        ),
        Statement("update child", "UPDATE child SET val = val + :b WHERE id = :a"),
        Statement("update through view", "UPDATE child_simple SET val = :b WHERE id = :a"),
        Statement(
            "insert tracked (trigger writes audit)",
            "INSERT INTO tracked (id, v) VALUES (:a, :b) ON CONFLICT (id) DO UPDATE SET v = :b",
        ),
        Statement(
            "function writes audit", "SELECT log_note(:b) AS done", lambda a, b: {"b": f"f{b}"}
        ),
        Statement("procedure writes audit", "CALL add_note(:b)", lambda a, b: {"b": f"c{b}"}),
        Statement(
            "DO block (unparsed) writes audit",
            "DO $$ BEGIN INSERT INTO audit (note) VALUES ('do'); END $$",
            lambda a, b: {},
        ),
        Statement(
            "data-modifying CTE",
            "WITH d AS (DELETE FROM child WHERE id = :a RETURNING id) SELECT count(*) FROM d",
            lambda a, b: {"a": a},
        ),
        Statement(
            "INSERT ... SELECT",
            "INSERT INTO audit (note) SELECT name FROM parent WHERE id = :a",
            lambda a, b: {"a": a},
        ),
        Statement(
            "MERGE",
            "MERGE INTO parent p USING (SELECT CAST(:a AS int) AS id, CAST(:b AS text) AS name) s"
            " ON p.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name"
            " WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)",
            lambda a, b: {"a": a, "b": f"m{b}"},
        ),
        Statement("COPY FROM", "COPY audit (note) FROM PROGRAM 'echo copied'", lambda a, b: {}),
        Statement(
            "insert through partitioned parent",
            "INSERT INTO measure (id, region, v) VALUES (:a, 'eu', :b)",
        ),
        Statement("update one partition", "UPDATE measure_eu SET v = :b WHERE id = :a"),
        Statement("insert inheritance child", "INSERT INTO special_items (id, v) VALUES (:a, :b)"),
        Statement(
            "TRUNCATE ... CASCADE", "TRUNCATE parent CASCADE", lambda a, b: {}, in_transaction=False
        ),
        Statement(
            "REFRESH MATERIALIZED VIEW",
            "REFRESH MATERIALIZED VIEW parent_names",
            lambda a, b: {},
            in_transaction=False,
        ),
    ],
    reset=[
        "TRUNCATE parent, child, audit, tracked, pinned, measure, base_items CASCADE",
        "INSERT INTO parent (id, name) VALUES (1, 'one'), (2, 'two'), (9, 'nine')",
        "INSERT INTO child (id, parent_id, val) VALUES (1, 1, 1), (3, 2, 2)",
        "INSERT INTO pinned (id, parent_id) VALUES (1, 9)",
        "REFRESH MATERIALIZED VIEW parent_names",
    ],
)

SQLITE = Dialect(
    name="sqlite",
    setup=[
        "CREATE TABLE parent (id integer PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE child (id integer PRIMARY KEY,"
        " parent_id integer REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE, val int)",
        "CREATE TABLE audit (id integer PRIMARY KEY AUTOINCREMENT, note text)",
        "CREATE TABLE tracked (id integer PRIMARY KEY, v int)",
        "CREATE VIEW child_view AS"
        " SELECT c.id, c.val, p.name FROM child c JOIN parent p ON p.id = c.parent_id",
        "CREATE VIEW child_simple AS SELECT id, val FROM child",
        "CREATE TRIGGER tracked_audit AFTER INSERT ON tracked"
        " BEGIN INSERT INTO audit (note) VALUES ('tracked ' || NEW.id); END",
        "CREATE TRIGGER tracked_audit_update AFTER UPDATE ON tracked"
        " BEGIN INSERT INTO audit (note) VALUES ('tracked ' || NEW.id); END",
        # SQLite views are read-only: an INSTEAD OF trigger makes this one writable.
        "CREATE TRIGGER child_simple_update INSTEAD OF UPDATE ON child_simple"
        " BEGIN UPDATE child SET val = NEW.val WHERE id = OLD.id; END",
    ],
    reads=[
        *[r for r in _COMMON_READS if r.name != "parent qualified"],
        Statement("parent qualified", "SELECT id, name FROM main.parent ORDER BY id"),
    ],
    writes=[
        Statement(
            "upsert parent",
            "INSERT INTO parent (id, name) VALUES (:a, :b)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            lambda a, b: {"a": a, "b": f"p{b}"},
        ),
        Statement(
            "rename parent, schema-qualified",
            "UPDATE main.parent SET name = :b WHERE id = :a",
            lambda a, b: {"a": a, "b": f"q{b}"},
        ),
        Statement(
            "rename parent, quoted",
            'UPDATE "parent" SET "name" = :b WHERE "id" = :a',
            lambda a, b: {"a": a, "b": f"r{b}"},
        ),
        Statement(
            "rename parent, upper case",
            "UPDATE PARENT SET NAME = :b WHERE ID = :a",
            lambda a, b: {"a": a, "b": f"u{b}"},
        ),
        Statement("re-key parent (ON UPDATE CASCADE)", REKEY, lambda a, b: {"a": a, "b": b + 100}),
        Statement("delete parent (ON DELETE CASCADE)", "DELETE FROM parent WHERE id = :a"),
        Statement(
            "insert child",
            "INSERT OR IGNORE INTO child (id, parent_id, val) SELECT :b, :a, :b"
            " WHERE EXISTS (SELECT 1 FROM parent WHERE id = :a)",
        ),
        Statement("update child", "UPDATE child SET val = val + :b WHERE id = :a"),
        Statement("update through view", "UPDATE child_simple SET val = :b WHERE id = :a"),
        Statement(
            "insert tracked (trigger writes audit)",
            "INSERT INTO tracked (id, v) VALUES (:a, :b) ON CONFLICT (id) DO UPDATE SET v = :b",
        ),
        Statement(
            "function writes audit",
            "SELECT log_note(:b) AS done",
            lambda a, b: {"b": f"f{b}"},
            in_transaction=False,
        ),
        Statement(
            "UPDATE OR ROLLBACK (unparsed)",
            "UPDATE OR ROLLBACK parent SET name = :b WHERE id = :a",
            lambda a, b: {"a": a, "b": f"o{b}"},
        ),
        Statement(
            "INSERT ... SELECT",
            "INSERT INTO audit (note) SELECT name FROM parent WHERE id = :a",
            lambda a, b: {"a": a},
        ),
        Statement(
            "delete every parent (SQLite's TRUNCATE, cascading)",
            "DELETE FROM parent",
            lambda a, b: {},
        ),
    ],
    reset=[
        "DELETE FROM child",
        "DELETE FROM parent",
        "DELETE FROM audit",
        "DELETE FROM tracked",
        "INSERT INTO parent (id, name) VALUES (1, 'one'), (2, 'two')",
        "INSERT INTO child (id, parent_id, val) VALUES (1, 1, 1), (3, 2, 2)",
    ],
)


def install_sqlite_writing_function(engine: Engine, database: str) -> None:
    """``log_note(text)``: an application function that writes ``audit`` on its own connection."""
    import sqlite3

    def log_note(note: str) -> int:
        writer = sqlite3.connect(database, timeout=30)
        try:
            with writer:
                writer.execute("INSERT INTO audit (note) VALUES (?)", (note,))
        finally:
            writer.close()
        return 1

    @event.listens_for(engine, "connect")
    def register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("log_note", 1, log_note)


# -- operations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One step: ``kind`` is read, write, begin, savepoint, rollback_savepoint, release, commit,
    rollback, outside_read (every read, not on the open transaction) or sweep (every read);
    ``via_engine``
    sends a write through the plain hooked engine."""

    kind: str
    index: int = 0
    a: int = 1
    b: int = 1
    via_engine: bool = False


def operations(dialect: Dialect) -> st.SearchStrategy[list[Op]]:
    """Sequences of steps over ``dialect``'s catalogue (keys 1-3 so steps collide)."""
    keys = st.integers(1, 3)
    read = st.builds(Op, st.just("read"), st.integers(0, len(dialect.reads) - 1), keys, keys)
    write = st.builds(
        Op, st.just("write"), st.integers(0, len(dialect.writes) - 1), keys, keys, st.booleans()
    )
    control = st.builds(
        Op,
        st.sampled_from(
            [
                "begin",
                "savepoint",
                "rollback_savepoint",
                "release",
                "commit",
                "rollback",
                "outside_read",
            ]
        ),
        st.integers(0, len(dialect.reads) - 1),
        keys,
    )
    sweep = st.just(Op("sweep"))
    return st.lists(
        st.one_of(read, read, write, write, write, control, sweep), min_size=1, max_size=25
    )


class Runner:
    """Runs steps against one optimizer, checking the property at every read."""

    def __init__(self, dialect: Dialect, optimizer: QueryOptimizer, schema: str) -> None:
        self.dialect = dialect
        self.optimizer = optimizer
        self.engine = optimizer.sync_engine
        self.schema = schema
        self.conn: Connection | None = None
        self.transaction: RootTransaction | None = None
        self.savepoints: list[Any] = []
        self.checked = 0

    def reset(self) -> None:
        """Known rows in every table, through the hooked engine (so the cache hears of it)."""
        with self.engine.begin() as conn:
            for sql in self.dialect.reset:
                conn.exec_driver_sql(sql)

    def run(self, ops: list[Op]) -> None:
        """Warm the cache with every read, run ``ops``, commit, and check every read again."""
        try:
            self.sweep()
            for op in ops:
                self.step(op)
            self.finish(commit=True)
            self.sweep()
        finally:
            self.finish(commit=False)

    def sweep(self, conn: Connection | None = None) -> None:
        for index, statement in enumerate(self.dialect.reads):
            for a in (1, 2) if "a}" in statement.sql or ":a" in statement.sql else (1,):
                self.check(Op("read", index, a), conn)

    def step(self, op: Op) -> None:
        if op.kind == "begin" and self.conn is None:
            self.conn = self.engine.connect()
            self.transaction = self.conn.begin()
        elif op.kind == "savepoint" and self.conn is not None:
            self.savepoints.append(self.conn.begin_nested())
        elif op.kind in {"rollback_savepoint", "release"} and self.savepoints:
            savepoint = self.savepoints.pop()
            savepoint.rollback() if op.kind == "rollback_savepoint" else savepoint.commit()
        elif op.kind in {"commit", "rollback"}:
            self.finish(commit=op.kind == "commit")
        elif op.kind == "outside_read":
            self.sweep(None)
        elif op.kind == "sweep":
            self.sweep(self.conn)
        elif op.kind == "read":
            self.check(op, self.conn)
        elif op.kind == "write":
            self.write(op)

    def finish(self, commit: bool) -> None:
        if self.conn is None:
            return
        try:
            self.savepoints.clear()
            assert self.transaction is not None
            self.transaction.commit() if commit else self.transaction.rollback()
        finally:
            self.conn.close()
            self.conn, self.transaction = None, None

    def write(self, op: Op) -> None:
        statement = self.dialect.writes[op.index]
        if self.conn is not None and not statement.in_transaction:
            return
        sql = statement.sql.format(schema=self.schema)
        params = {k: v for k, v in statement.params(op.a, op.b).items() if f":{k}" in sql}
        if self.conn is not None:
            if op.via_engine:
                self.conn.execute(text(sql), params)
            else:
                self.optimizer.execute_query_sync(sql, params, connection=self.conn)
        elif op.via_engine:
            with self.engine.begin() as conn:
                conn.execute(text(sql), params)
        else:
            self.optimizer.execute_query_sync(sql, params)

    def check(self, op: Op, conn: Connection | None) -> None:
        statement = self.dialect.reads[op.index]
        sql = statement.sql.format(schema=self.schema, a=op.a)
        params = {"a": op.a} if ":a" in sql else {}
        run = self.optimizer.execute_query_sync
        uncached, _ms = run(sql, params, use_cache=False, connection=conn)
        for _ in range(2):  # a miss that may store, then what a cache would answer
            cached, _ms = run(sql, params, connection=conn)
            assert cached == uncached, (
                f"stale cached read {statement.name!r} ({sql}): cached {cached}, "
                f"database {uncached}"
            )
        self.checked += 1


def every_write_form(dialect: Dialect) -> Iterator[Any]:
    """Deterministic sequences, one set per write form, as ``pytest.param`` with readable ids:
    the write alone (through the optimizer), inside a transaction read from outside before the
    commit, and between savepoints that are released (written through the plain engine) or
    rolled back (the CI guarantee that each form is exercised
    whatever hypothesis draws). Every sequence starts and ends with every read."""
    import pytest

    for index, statement in enumerate(dialect.writes):
        # a = 1: parent 1 and child 1 exist; b = 2: no child 2 yet (reset inserts children 1, 3).
        write = Op("write", index, 1, 2)
        via_engine = Op("write", index, 1, 2, via_engine=True)
        shapes = {
            "autocommit": [write],
            "transaction": [Op("begin"), write, Op("sweep"), Op("outside_read"), Op("commit")],
            "released savepoint": [Op("begin"), Op("savepoint"), via_engine, Op("outside_read"),
                                   Op("release"), Op("outside_read"), Op("rollback")],
            "rolled-back savepoint": [Op("begin"), Op("savepoint"), write, Op("outside_read"),
                                      Op("rollback_savepoint"), Op("sweep"), Op("commit")],
        }  # fmt: skip
        for shape, ops in shapes.items():
            yield pytest.param(ops, id=f"{statement.name} / {shape}")
