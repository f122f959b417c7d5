"""Workload-wide query advice (issue 15 item 5): ``sluice db report`` ranks every client's
statements from pg_stat_statements, on a private cluster that preloads it (the shared server is
never restarted), and says so, without failing, where the extension is not available."""

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from sluice.db import build_engine, upgrade
from sluice.query import QueryOptimizer
from sluice.store import DiskStore
from tests.conftest import require_hypopg, run_sluice, service_env
from tests.query_support import private_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stats_database() -> Iterator[str]:
    # Outside pytest's tmp_path: the postgres user must reach the cluster's folder.
    base = Path(tempfile.mkdtemp(prefix="sluice-pgss-"))
    base.chmod(0o755)
    try:
        with private_postgres(base / "pg", "shared_preload_libraries=pg_stat_statements") as url:
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


def other_client_workload(url: str) -> None:
    """Statements from a client that is not sluice: only pg_stat_statements sees them."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        for _ in range(60):
            conn.execute("SELECT id FROM events WHERE account = %s", (7,)).fetchall()
        for _ in range(3):
            conn.execute("SELECT id FROM events WHERE kind = %s", ("rare",)).fetchall()


def test_report_ranks_every_clients_statements_and_weighs_advice_by_calls(
    stats_database: str, tmp_path: Path
) -> None:
    require_hypopg(stats_database)
    engine = create_engine(stats_database)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS hypopg"))
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        conn.execute(text("DROP TABLE IF EXISTS events"))
        conn.execute(text("CREATE TABLE events (id serial PRIMARY KEY, account int, kind text)"))
        conn.execute(
            text(
                "INSERT INTO events (account, kind) SELECT g % 500, 'k' || (g % 400)"
                " FROM generate_series(1, 30000) g"
            )
        )
        conn.execute(text("ANALYZE events"))
    engine.dispose()
    upgrade(engine=build_engine(stats_database))
    with create_engine(stats_database).begin() as conn:
        conn.execute(text("SELECT pg_stat_statements_reset()"))
    other_client_workload(stats_database)

    done = run_sluice(
        "db", "report", "--json",
        env=service_env(tmp_path, SLUICE_DATABASE_URL=stats_database),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    workload = json.loads(done.stdout)["workload"]
    assert workload["source"] == "pg_stat_statements", workload["note"]
    totals = [row["total_ms"] for row in workload["statements"]]
    assert totals == sorted(totals, reverse=True)
    by_query = {row["query"]: row for row in workload["statements"]}
    frequent = by_query["SELECT id FROM events WHERE account = $1"]
    assert frequent["calls"] == 60
    advice = {tuple(a["columns"]): a for a in workload["index_recommendations"]
              if a["table_name"] == "events"}  # fmt: skip
    assert ("account",) in advice, workload["index_recommendations"]
    assert advice[("account",)]["method"] == "hypopg" and advice[("account",)]["validated"]
    assert advice[("account",)]["calls"] == 60
    ranked = [tuple(a["columns"]) for a in workload["index_recommendations"]]
    if ("kind",) in advice:  # the rarely run statement's index saves less time: ranked lower
        assert ranked.index(("account",)) < ranked.index(("kind",))


def test_without_pg_stat_statements_the_report_says_so_and_uses_this_process(
    pg_schema: str, tmp_path: Path
) -> None:
    engine = build_engine(pg_schema)
    store = DiskStore(tmp_path / "store", prefix="wl:")
    optimizer = QueryOptimizer(engine, slow_threshold_ms=0, store=store)
    try:
        with engine.connect() as conn:  # the test database never gets the extension
            for _ in range(3):
                conn.execute(text("SELECT 1 AS one")).fetchall()
        workload = optimizer.get_workload_report(top=5)
        assert workload["source"] == "this process"
        assert "pg_stat_statements is not installed" in workload["note"]
        calls = {row["query"]: row["calls"] for row in workload["statements"]}
        assert calls["SELECT %s AS one"] == 3
    finally:
        optimizer.close()
        store.close()
        engine.dispose()
