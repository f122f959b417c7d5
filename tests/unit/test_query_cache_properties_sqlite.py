"""The query-cache property on SQLite: a cached read always equals the same read uncached."""

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from sluice.db import build_engine
from sluice.query import QueryOptimizer
from sluice.store import DiskStore
from tests.query_cache_model import (
    SQLITE,
    Op,
    Runner,
    every_write_form,
    install_sqlite_writing_function,
    operations,
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    root = tmp_path_factory.mktemp("property")
    database = str(root / "p.db")
    engine = build_engine(f"sqlite:///{database}")
    install_sqlite_writing_function(engine, database)
    store = DiskStore(root / "store", prefix="prop:")
    optimizer = QueryOptimizer(engine, store=store, cache_enabled=True)
    with engine.begin() as conn:
        for sql in SQLITE.setup:
            conn.exec_driver_sql(sql)
    yield Runner(SQLITE, optimizer, "main")
    optimizer.close()
    store.close()
    engine.dispose()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations(SQLITE))
def test_cached_reads_equal_uncached_reads_on_sqlite(runner: Runner, ops: list[Op]) -> None:
    runner.reset()
    runner.run(ops)


@pytest.mark.parametrize("ops", list(every_write_form(SQLITE)))
def test_every_write_form_reaches_every_cached_read_on_sqlite(
    runner: Runner, ops: list[Op]
) -> None:
    runner.reset()
    runner.run(ops)
    assert runner.optimizer.cache.stats()["hits"] > 0  # the property was tested against hits
