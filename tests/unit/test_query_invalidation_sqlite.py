"""Invalidation edge cases on SQLite the property test does not generate: unparsed SQL, COMMIT
sent as SQL, old snapshots, temporary tables, the dependency map's life cycle, oversized
statements and the byte-bounded parse memo."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from sluice.db import build_engine
from sluice.errors import InvalidInput
from sluice.query import QueryNormalizer, QueryOptimizer
from sluice.query.parse_cache import ByteBudgetCache
from sluice.store import DiskStore

NAME = "SELECT name FROM item WHERE id = 1"


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inv.db'}"


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    engine = build_engine(database)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (id integer PRIMARY KEY, name text)")
        conn.exec_driver_sql("CREATE TABLE log (id integer PRIMARY KEY, note text)")
        conn.exec_driver_sql("INSERT INTO item VALUES (1, 'old')")
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskStore]:
    store = DiskStore(tmp_path / "store", prefix="inv:")
    yield store
    store.close()


@pytest.fixture
def optimizer(engine: Engine, store: DiskStore) -> Iterator[QueryOptimizer]:
    opt = QueryOptimizer(engine, store=store, cache_enabled=True)
    yield opt
    opt.close()


def name(opt: QueryOptimizer, sql: str = NAME) -> tuple[str, bool]:
    """The item's name, and whether the cache answered."""
    before = opt.cache.stats()["hits"]
    rows, _ = opt.execute_query_sync(sql)
    return rows[0]["name"], opt.cache.stats()["hits"] > before


def test_statements_differing_only_in_a_literal_never_share_an_answer(
    optimizer: QueryOptimizer,
) -> None:
    # Bug found: entries were keyed by fingerprint, which ignores literals.
    optimizer.execute_query_sync("INSERT INTO item VALUES (2, 'two')")
    first, _ = optimizer.execute_query_sync("SELECT name FROM item WHERE id = 1")
    second, _ = optimizer.execute_query_sync("SELECT name FROM item WHERE id = 2")
    assert (first, second) == ([{"name": "old"}], [{"name": "two"}])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE OR ROLLBACK item SET name = 'new' WHERE id = 1",
        "REPLACE INTO item (id, name) VALUES (1, 'new')",
    ],
)
def test_an_unparsed_write_invalidates_everything(
    engine: Engine, optimizer: QueryOptimizer, statement: str
) -> None:
    assert not optimizer.normalizer.analyze(statement).parsed
    assert name(optimizer) == ("old", False)
    assert name(optimizer) == ("old", True)
    optimizer.execute_query_sync("SELECT count(*) FROM log")  # another table, cached too
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert name(optimizer) == ("new", False)
    assert optimizer.execute_query_sync("SELECT count(*) AS n FROM log")[0] == [{"n": 0}]
    assert optimizer.cache.stats()["hits"] == 1  # the log read missed too: everything went


def test_commit_sent_as_sql_invalidates_after_it_lands(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    name(optimizer)
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("UPDATE item SET name = 'new' WHERE id = 1")
        assert name(optimizer) == ("old", False)  # cached under the versions of the open write
        conn.exec_driver_sql("COMMIT")
        assert name(optimizer) == ("new", False)
        conn.rollback()  # SQLAlchemy's own bookkeeping: nothing to roll back any more
    assert name(optimizer) == ("new", True)


def test_a_read_in_an_old_snapshot_is_neither_served_nor_stored(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    name(optimizer)
    with engine.connect() as reader:
        reader.exec_driver_sql("BEGIN")
        reader.exec_driver_sql("SELECT count(*) FROM item").fetchall()  # snapshot taken
        optimizer.execute_query_sync("UPDATE item SET name = 'new' WHERE id = 1")
        rows, _ = optimizer.execute_query_sync(NAME, connection=reader)
        assert rows == [{"name": "old"}]  # its snapshot, not the cache's (nor stored)
        reader.rollback()
    assert name(optimizer) == ("new", False)
    assert name(optimizer) == ("new", True)


def test_temporary_tables_are_never_cached(engine: Engine, optimizer: QueryOptimizer) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE scratch (v int)")
        conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
        conn.commit()
        for _ in range(2):
            rows, _ = optimizer.execute_query_sync("SELECT v FROM scratch", connection=conn)
            assert rows == [{"v": 1}]
    assert optimizer.cache.stats()["hits"] == 0


def test_the_dependency_map_is_read_once_and_again_after_ddl(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    tracker = optimizer.write_tracker
    for _ in range(3):
        name(optimizer)
        optimizer.execute_query_sync("UPDATE item SET name = 'old' WHERE id = 1")
    assert tracker.map_loads == 1
    with engine.begin() as conn:  # a trigger makes item's writes reach log
        conn.exec_driver_sql(
            "CREATE TRIGGER item_log AFTER UPDATE ON item"
            " BEGIN INSERT INTO log (note) VALUES (NEW.name); END"
        )
    optimizer.execute_query_sync("SELECT count(*) AS n FROM log")
    optimizer.execute_query_sync("UPDATE item SET name = 'x' WHERE id = 1")
    rows, _ = optimizer.execute_query_sync("SELECT count(*) AS n FROM log")
    assert rows == [{"n": 1}]
    assert tracker.map_loads == 2


def test_ddl_in_another_process_refreshes_this_process_map(
    database: str, engine: Engine, store: DiskStore, optimizer: QueryOptimizer
) -> None:
    # A second engine and optimizer on the same database and store: another process's view.
    other_engine = build_engine(database)
    other = QueryOptimizer(other_engine, store=store, cache_enabled=True)
    try:
        optimizer.execute_query_sync("UPDATE item SET name = 'old' WHERE id = 1")  # map loaded
        assert optimizer.execute_query_sync("SELECT count(*) AS n FROM log")[0] == [{"n": 0}]
        with other_engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER item_log AFTER UPDATE ON item"
                " BEGIN INSERT INTO log (note) VALUES (NEW.name); END"
            )
        with engine.begin() as conn:  # through this process's engine, not the optimizer
            conn.execute(text("UPDATE item SET name = 'y' WHERE id = 1"))
        assert optimizer.execute_query_sync("SELECT count(*) AS n FROM log")[0] == [{"n": 1}]
    finally:
        other.close()
        other_engine.dispose()


def test_schema_qualified_invalidation_reaches_unqualified_reads(
    optimizer: QueryOptimizer,
) -> None:
    name(optimizer)
    optimizer.invalidate_cache_for_table_sync('main."ITEM"')
    assert name(optimizer) == ("old", False)


# -- issue 16 item 7: oversized statements ----------------------------------------------------------


def in_list(size: int, offset: int) -> str:
    """A statement of over 1 MB: ``IN (1, <size - 1 six-digit values>)``."""
    start = 100_000 + offset * size
    values = ",".join(str(start + i) for i in range(size - 1))
    return f"SELECT id, name FROM item WHERE id IN (1,{values})"


@pytest.mark.timeout(120)
def test_a_one_megabyte_in_list_goes_through_and_the_memo_stays_small(
    optimizer: QueryOptimizer,
) -> None:
    statements = [in_list(150_000, offset) for offset in range(0, 3)]
    assert all(len(s) > 1_000_000 for s in statements)
    for sql in statements:
        rows, _ = optimizer.execute_query_sync(sql)
        assert rows == [{"id": 1, "name": "old"}]
    shape = optimizer.normalizer.analyze(statements[0])
    assert shape.parsed and shape.relations_read == {"item"}
    assert shape.normalized == "SELECT id, name FROM item WHERE id IN (?)"
    # Three distinct megabyte statements cost the memo kilobytes, not 100 MB each.
    assert optimizer.normalizer.cache.accounted_bytes < 200_000


@pytest.mark.timeout(120)
def test_an_oversized_statement_that_cannot_be_reduced_is_unparsed_and_conservative(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    # abs(n) is not a literal: nothing to cut, so the statement stays over the limit.
    values = ",".join(f"abs({i})" for i in range(1, 60_000))
    write = f"UPDATE item SET name = 'big' WHERE id IN ({values})"
    shape = optimizer.normalizer.analyze(write)
    assert len(write) > optimizer.normalizer.max_parse_chars
    assert not shape.parsed and shape.writes_unknown
    optimizer.execute_query_sync("SELECT count(*) AS n FROM log")
    optimizer.execute_query_sync(write)
    assert name(optimizer) == ("big", False)
    read = f"SELECT count(*) AS n FROM item WHERE id IN ({values})"  # unparsed: never cached
    for _ in range(2):
        optimizer.execute_query_sync(read)
    assert optimizer.cache.stats()["hits"] == 0


def test_the_parse_memo_is_bounded_in_bytes() -> None:
    normalizer = QueryNormalizer("sqlite", cache_bytes=200_000)
    for i in range(500):
        normalizer.analyze(f"SELECT c{i} FROM t{i} WHERE a = 1 AND b IN (1, 2, 3)")
        assert normalizer.cache.accounted_bytes <= 200_000
    assert 0 < len(normalizer.cache) < 500
    huge = ByteBudgetCache(lambda key: key, lambda key, value: len(value), max_bytes=10)
    assert huge("x" * 100) == "x" * 100 and len(huge) == 0  # bigger than the budget: not kept
    with pytest.raises(InvalidInput, match="max_bytes must be a non-negative integer, got -1"):
        ByteBudgetCache(lambda key: key, lambda key, value: 1, max_bytes=-1)


def test_the_workload_report_refuses_a_bad_top_and_falls_back_on_sqlite(
    optimizer: QueryOptimizer,
) -> None:
    with pytest.raises(InvalidInput, match="top must be a positive integer, got 0"):
        optimizer.get_workload_report(top=0)
    name(optimizer)
    workload = optimizer.get_workload_report(top=3)
    assert workload["source"] == "this process" and "sqlite" in workload["note"]
    assert workload["statements"][0]["calls"] >= 1


def test_explicit_table_invalidation_reaches_views_over_it(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    optimizer.execute_query_sync("CREATE VIEW item_names AS SELECT name FROM item")
    for _ in range(2):
        optimizer.execute_query_sync("SELECT name FROM item_names")
    assert optimizer.cache.stats()["hits"] == 1
    with engine.begin() as conn:  # outside the optimizer's hooks' reach: nothing invalidates
        conn.connection.dbapi_connection.execute("UPDATE item SET name = 'raw' WHERE id = 1")
    optimizer.invalidate_cache_for_table_sync("item")
    assert optimizer.execute_query_sync("SELECT name FROM item_names")[0] == [{"name": "raw"}]
