"""The query-cache property on PostgreSQL + Redis: a cached read always equals the same read
uncached, through schema-qualified, quoted and upper-case names, views, a materialized view,
cascading foreign keys, partitions, inheritance, a trigger, a function and a procedure that write
another table, data-modifying CTEs, MERGE, COPY and TRUNCATE ... CASCADE."""

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import create_engine

from sluice.db import build_engine
from sluice.query import QueryOptimizer
from sluice.store import RedisStore
from tests.query_cache_model import POSTGRES, Op, Runner, every_write_form, operations

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner(postgres_url: str, redis_url: str) -> Iterator[Runner]:
    """One schema for the module (each example resets its rows), first on the search_path."""
    schema = f"t_prop_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = build_engine(f"{postgres_url}?options=-csearch_path%3D{schema},public")
    store = RedisStore(redis_url, prefix=f"sluice-test:{uuid.uuid4().hex[:12]}:")
    optimizer = QueryOptimizer(engine, store=store, cache_enabled=True)
    try:
        with engine.begin() as conn:  # through the hooked engine: DDL refreshes the map
            for sql in POSTGRES.setup:
                conn.exec_driver_sql(sql)
        yield Runner(POSTGRES, optimizer, schema)
    finally:
        optimizer.close()
        store.clear_namespace()
        store.close()
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations(POSTGRES))
def test_cached_reads_equal_uncached_reads_on_postgres(runner: Runner, ops: list[Op]) -> None:
    runner.reset()
    runner.run(ops)


@pytest.mark.parametrize("ops", list(every_write_form(POSTGRES)))
def test_every_write_form_reaches_every_cached_read_on_postgres(
    runner: Runner, ops: list[Op]
) -> None:
    runner.reset()
    runner.run(ops)
    assert runner.optimizer.cache.stats()["hits"] > 0  # the property was tested against hits
