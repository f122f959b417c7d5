import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sluice.db import Project, build_engine, current_revision, downgrade, upgrade
from sluice.query import QueryExecutionError, QueryOptimizer, QueryParameterError
from sluice.query.cli import report, seed
from sluice.settings import get_settings, load_settings
from sluice.store import DiskStore, get_store, reset_store_cache
from tests.query_support import add_project, write_in_another_process

PROJECT = "SELECT id, name FROM projects WHERE owner_id = $1"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = build_engine(f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(engine=engine)
    add_project(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskStore]:
    store = DiskStore(tmp_path / "store", prefix="qtest:")
    yield store
    store.close()


@pytest.fixture
def optimizer(engine: Engine, store: DiskStore) -> Iterator[QueryOptimizer]:
    opt = QueryOptimizer(engine, slow_threshold_ms=100, store=store, cache_enabled=True)
    yield opt
    opt.close()


def read(opt: QueryOptimizer, **kw: object) -> tuple[str, bool]:
    before = opt.cache.stats()["hits"]
    rows, _ = opt.execute_query_sync(PROJECT, {"owner_id": 1}, **kw)  # type: ignore[arg-type]
    return rows[0]["name"], opt.cache.stats()["hits"] > before


def test_guide_example_runs_and_caches(optimizer: QueryOptimizer) -> None:
    async def guide() -> tuple[list[dict[str, object]], float]:
        user_id = 1
        result, duration = await optimizer.execute_query(
            "SELECT * FROM projects WHERE owner_id = $1",
            {"owner_id": user_id},
            use_cache=True,
            cache_ttl=300,
        )
        await optimizer.invalidate_cache_for_table("projects")
        return result, duration

    result, duration = asyncio.run(guide())
    assert result[0]["name"] == "alpha" and duration >= 0
    assert read(optimizer) == ("alpha", False)  # invalidated by the guide's call
    assert read(optimizer) == ("alpha", True)
    report_ = optimizer.get_optimization_report()
    assert set(report_) == {
        "cache_stats",
        "query_stats",
        "top_slow_queries",
        "index_recommendations",
    }
    assert report_["cache_stats"]["hit_rate"] > 0
    assert isinstance(optimizer._slow_analyzer.get_index_recommendations(), list)


def test_orm_and_textual_writes_invalidate(engine: Engine, optimizer: QueryOptimizer) -> None:
    assert read(optimizer) == ("alpha", False)
    assert read(optimizer) == ("alpha", True)
    with Session(engine) as session, session.begin():
        session.get(Project, 1).name = "orm"  # type: ignore[union-attr]
    assert read(optimizer) == ("orm", False)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE projects SET name = 'driver' WHERE id = 1")
    assert read(optimizer) == ("driver", False)
    optimizer.execute_query_sync("UPDATE projects SET name = $1 WHERE id = 1", ["through"])
    assert read(optimizer) == ("through", False)


def test_rollback_keeps_old_data_and_an_open_write_transaction_bypasses_the_cache(
    engine: Engine, optimizer: QueryOptimizer
) -> None:
    read(optimizer)
    with engine.connect() as conn:
        conn.execute(text("UPDATE projects SET name = 'pending' WHERE id = 1"))
        rows, _ = optimizer.execute_query_sync(PROJECT, [1], connection=conn)
        assert rows[0]["name"] == "pending"  # reads its own write, not the cache
        conn.rollback()
    assert read(optimizer) == ("alpha", False)
    assert read(optimizer) == ("alpha", True)
    assert optimizer.cache.stats()["size"] == 2  # the in-transaction read was not stored


def test_locking_and_volatile_queries_are_never_cached(optimizer: QueryOptimizer) -> None:
    for _ in range(2):
        optimizer.execute_query_sync("SELECT id, datetime('now') AS t FROM projects")
        optimizer.execute_query_sync("SELECT random() AS r FROM projects")
    assert optimizer.cache.stats()["hits"] == 0


def test_cache_flag_off_and_explicit_invalidation(engine: Engine, store: DiskStore) -> None:
    off = QueryOptimizer(
        engine, store=store, settings=load_settings({"QUERY_CACHE_ENABLED": "false"})
    )
    try:
        assert not off.cache_enabled
        read(off)
        assert read(off) == ("alpha", False)
    finally:
        off.close()
    on = QueryOptimizer(engine, store=store, cache_enabled=True)
    try:
        read(on)
        on.invalidate_cache_for_table_sync("projects")
        assert read(on) == ("alpha", False)
        on.invalidate_all_sync()
        assert read(on) == ("alpha", False)
        on.invalidate_cache_for_table_sync("users")  # a table the query does not read
        assert read(on) == ("alpha", True)
    finally:
        on.close()


def test_values_round_trip_through_the_cache(optimizer: QueryOptimizer) -> None:
    sql = "SELECT id, name, created_at, CAST(1.5 AS REAL) AS f, X'00ff' AS b FROM projects"
    first, _ = optimizer.execute_query_sync(sql)
    second, _ = optimizer.execute_query_sync(sql)
    assert first == second and second[0]["b"] == b"\x00\xff"


def test_bad_input_gives_clear_errors(optimizer: QueryOptimizer) -> None:
    with pytest.raises(QueryExecutionError, match="no such table: nope"):
        optimizer.execute_query_sync("SELECT * FROM nope")
    with pytest.raises(QueryExecutionError, match="syntax error"):
        optimizer.execute_query_sync("SELEC * FROM projects")
    with pytest.raises(QueryParameterError, match="missing parameters: owner"):
        optimizer.execute_query_sync("SELECT * FROM projects WHERE owner_id = :owner", {})
    with pytest.raises(QueryParameterError, match="unexpected parameters: b"):
        optimizer.execute_query_sync("SELECT $1", {"a": 1, "b": 2})


def test_every_engine_query_is_timed_and_slow_ones_are_explained(
    engine: Engine, store: DiskStore, caplog: pytest.LogCaptureFixture
) -> None:
    opt = QueryOptimizer(engine, slow_threshold_ms=0, store=store)
    try:
        logs = caplog.at_level(logging.WARNING, logger="sluice.query.slow_queries")
        with logs, engine.connect() as conn:  # not through the optimizer
            conn.execute(text("SELECT * FROM code_review_results WHERE message = 'high'"))
            conn.execute(text("SELECT * FROM code_review_results WHERE message = 'low'"))
        stats = {s.normalized: s for s in opt.slow_query_analyzer.stats()}
        shape = "SELECT * FROM code_review_results WHERE message = ?"
        assert stats[shape].calls == 2 and stats[shape].plan is not None
        assert "SCAN on code_review_results" in stats[shape].plan.summary()
        assert any(stats[shape].fingerprint in r.message for r in caplog.records)
        advice = opt._slow_analyzer.get_index_recommendations()
        mine = [a for a in advice if a["table_name"] == "code_review_results"]
        assert mine and mine[0]["columns"] == ["message"] and mine[0]["method"] == "heuristic"
        assert mine[0]["create_statement"].startswith('CREATE INDEX IF NOT EXISTS "ix_code_review')
        # (session_id, severity) exists after 004: an issue-filtering query needs no advice.
        with engine.connect() as conn:
            conn.execute(
                text("SELECT * FROM code_review_results WHERE session_id = 1 AND severity = 'x'")
            )
        advice = opt._slow_analyzer.get_index_recommendations()
        assert not [a for a in advice if "session_id" in a["columns"]]
    finally:
        opt.close()


def test_a_write_in_another_process_invalidates_through_the_disk_store(
    engine: Engine, tmp_path: Path
) -> None:
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "shared"), "SLUICE_KEY_PREFIX": "two:"}
    settings = load_settings(env)
    opt = QueryOptimizer(engine, store=get_store(settings), cache_enabled=True)
    try:
        assert read(opt) == ("alpha", False)
        assert read(opt) == ("alpha", True)
        write_in_another_process(str(engine.url), "from-child", env)
        assert read(opt) == ("from-child", False)
    finally:
        opt.close()
        reset_store_cache()


def test_migration_004_on_sqlite_round_trips(engine: Engine) -> None:
    def names() -> set[str]:
        # sqlite_master, not the inspector: SQLAlchemy does not reflect expression indexes on SQLite.
        with engine.connect() as conn:
            found = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
            return {row[0] for row in found}

    assert current_revision(engine) == "004"
    assert len({n for n in names() if n.startswith("ix_")}) >= 30
    assert "ix_projects_name_trgm" not in names()  # PostgreSQL only
    downgrade("001", engine=engine)
    assert not {n for n in names() if n.startswith("ix_")}
    upgrade(engine=engine)
    assert {"ix_users_lower_email", "ix_audit_log_entity_type_action_created_at"} <= names()


def test_cli_seed_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    reset_store_cache()
    try:
        upgrade()
        runner = CliRunner()
        seeded = runner.invoke(seed, ["--results", "2000"])
        assert seeded.exit_code == 0, seeded.output
        assert "2000 results" in seeded.output
        printed = runner.invoke(report, ["--threshold-ms", "0"])
        assert printed.exit_code == 0, printed.output
        assert "slowest queries" in printed.output and "index recommendations" in printed.output
        as_json = runner.invoke(report, ["--json"])
        assert '"query_stats"' in as_json.output
    finally:
        get_settings.cache_clear()
        reset_store_cache()
