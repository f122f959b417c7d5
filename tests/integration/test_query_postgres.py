import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from sluice.db import build_engine, current_revision, dashboard, downgrade, upgrade
from sluice.db.seed import seed
from sluice.query import QueryExecutionError, QueryOptimizer
from sluice.settings import load_settings
from sluice.store import RedisStore, get_store, reset_store_cache
from tests.query_support import add_project, write_in_another_process

pytestmark = pytest.mark.integration
PROJECT = "SELECT id, name FROM projects WHERE owner_id = $1"


@pytest.fixture(scope="module", autouse=True)
def extensions(postgres_url: str) -> None:
    # Database-wide: created if missing, never dropped.
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    engine.dispose()


@pytest.fixture
def engine(pg_schema: str) -> Iterator[Engine]:
    engine = build_engine(pg_schema)
    upgrade(engine=engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, prefix=key_prefix)
    yield store
    store.close()


def read(opt: QueryOptimizer) -> tuple[str, bool]:
    before = opt.cache.stats()["hits"]
    rows, _ = opt.execute_query_sync(PROJECT, {"owner_id": 1})
    return rows[0]["name"], opt.cache.stats()["hits"] > before


def test_cache_and_invalidation_on_postgres_and_redis(engine: Engine, store: RedisStore) -> None:
    add_project(engine)
    opt = QueryOptimizer(engine, store=store, cache_enabled=True)
    try:
        assert read(opt) == ("alpha", False)
        assert read(opt) == ("alpha", True)
        with engine.begin() as conn:
            conn.execute(text("UPDATE projects SET name = 'beta' WHERE id = 1"))
        assert read(opt) == ("beta", False)
        with engine.connect() as conn:  # rolled back: the cache keeps answering with old data
            conn.execute(text("UPDATE projects SET name = 'gamma' WHERE id = 1"))
            conn.rollback()
        assert read(opt)[0] == "beta"
        with pytest.raises(QueryExecutionError, match='relation "nope" does not exist'):
            opt.execute_query_sync("SELECT * FROM nope")
    finally:
        opt.close()


def test_a_write_in_another_process_invalidates_through_redis(
    engine: Engine, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    add_project(engine)
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path), "SLUICE_REDIS_URL": redis_url,
           "SLUICE_KEY_PREFIX": key_prefix}  # fmt: skip
    opt = QueryOptimizer(engine, store=get_store(load_settings(env)), cache_enabled=True)
    try:
        assert read(opt) == ("alpha", False)
        assert read(opt) == ("alpha", True)
        write_in_another_process(engine.url.render_as_string(hide_password=False), "child", env)
        assert read(opt) == ("child", False)
    finally:
        opt.close()
        reset_store_cache()


def test_async_engine(pg_schema: str, store: RedisStore) -> None:
    engine = build_engine(pg_schema)
    upgrade(engine=engine)
    add_project(engine)
    engine.dispose()

    async def scenario() -> list[str]:
        async_engine = create_async_engine(pg_schema)
        opt = QueryOptimizer(async_engine, store=store, cache_enabled=True)
        names = []
        try:
            for new_name in (None, "async-write"):
                if new_name:
                    await opt.execute_query(
                        "UPDATE projects SET name = $1 WHERE id = 1", [new_name]
                    )
                rows, _ = await opt.execute_query(PROJECT, {"owner_id": 1})
                names.append(rows[0]["name"])
        finally:
            opt.close()
            await async_engine.dispose()
        return names

    assert asyncio.run(scenario()) == ["alpha", "async-write"]


def test_slow_queries_are_explained_and_advice_is_validated_with_hypopg(
    hypopg: str, engine: Engine, store: RedisStore
) -> None:
    seed(engine, 20_000)
    opt = QueryOptimizer(engine, slow_threshold_ms=0, store=store)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT id FROM code_review_results WHERE message = :m"), {"m": "x"})
            conn.execute(text("SELECT id FROM code_review_results WHERE line = 7"))
        stats = {s.normalized: s for s in opt.slow_query_analyzer.stats()}
        sample = stats["SELECT id FROM code_review_results WHERE message = %s"]
        assert sample.plan is not None and sample.plan.total_cost
        assert "Seq Scan on code_review_results" in sample.plan.summary()
        advice = opt._slow_analyzer.get_index_recommendations()
        by_columns = {tuple(a["columns"]): a for a in advice}
        assert ("message",) in by_columns and ("line",) in by_columns
        for item in advice:
            assert item["method"] == "hypopg" and item["validated"]
            assert item["estimated_improvement"] >= 50.0
        assert by_columns[("message",)]["create_statement"] == (
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "ix_code_review_results_message"'
            ' ON "code_review_results" ("message")'
        )
        # The dashboard queries are all served by 004's indexes: nothing to add for them.
        opt.slow_query_analyzer.reset()
        with engine.connect() as conn:
            params = dashboard.sample_params(conn)
            for name in ("project_dashboard", "issue_filtering", "user_by_email", "audit_trail"):
                assert dashboard.run(conn, name, **params[name]) is not None
        assert opt._slow_analyzer.get_index_recommendations() == []
    finally:
        opt.close()


def test_migration_004_round_trips_on_postgres(engine: Engine) -> None:
    def indexes() -> dict[str, str]:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                )
            )
            return {name: definition for name, definition in rows if name.startswith("ix_")}

    assert current_revision(engine) == "004"
    found = indexes()
    assert len(found) >= 30
    assert (
        "(project_id, status, created_at)"
        in found["ix_analysis_sessions_project_id_status_created_at"]
    )
    assert "(session_id, severity)" in found["ix_code_review_results_session_id_severity"]
    assert "gin (name gin_trgm_ops)" in found["ix_projects_name_trgm"]
    assert "lower((email)::text)" in found["ix_users_lower_email"]
    assert (
        "(entity_type, action, created_at)" in found["ix_audit_log_entity_type_action_created_at"]
    )
    downgrade("001", engine=engine)
    assert indexes() == {} and current_revision(engine) == "001"
    upgrade(engine=engine)
    assert indexes() == found
    assert "ix_users_lower_email" in {i["name"] for i in inspect(engine).get_indexes("users")}


def test_a_read_in_a_repeatable_read_snapshot_is_never_stored(
    engine: Engine, store: RedisStore
) -> None:
    add_project(engine)
    opt = QueryOptimizer(engine, store=store, cache_enabled=True)
    try:
        assert read(opt) == ("alpha", False)
        with engine.connect() as reader:
            reader = reader.execution_options(isolation_level="REPEATABLE READ")
            reader.execute(text("SELECT 1 FROM projects")).fetchall()  # the snapshot is taken
            opt.execute_query_sync("UPDATE projects SET name = 'after' WHERE id = 1")
            rows, _ = opt.execute_query_sync(PROJECT, [1], connection=reader)
            assert rows[0]["name"] == "alpha"  # its snapshot: neither served from nor stored
            reader.rollback()
        assert read(opt) == ("after", False)
        assert read(opt) == ("after", True)
    finally:
        opt.close()


@pytest.mark.timeout(120)
def test_a_one_megabyte_in_list_on_postgres(engine: Engine, store: RedisStore) -> None:
    add_project(engine)
    opt = QueryOptimizer(engine, store=store, cache_enabled=True)
    try:
        values = ",".join(str(100_000 + i) for i in range(150_000))
        sql = f"SELECT id, name FROM projects WHERE id IN (1,{values})"
        assert len(sql) > 1_000_000
        for _ in range(2):
            rows, _ = opt.execute_query_sync(sql)
            assert [r["name"] for r in rows] == ["alpha"]
        assert opt.normalizer.analyze(sql).relations_read == {"projects"}
        assert opt.normalizer.cache.accounted_bytes < 200_000
    finally:
        opt.close()
