"""The rollback runbook (docs/operations.md), step by step, each flag in a fresh process.

Every step runs in a subprocess with the runbook's environment, as an operator's restarted service
would: settings are read once per process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, run_sluice
from tests.monitoring_support import monitoring_env

pytestmark = pytest.mark.integration


def python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.fixture
def env(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> dict[str, str]:
    env = monitoring_env(tmp_path, redis_url, redis_broker_url, key_prefix, pg_schema)
    assert run_sluice("db", "upgrade", env=env).returncode == 0
    return env


CACHE_ROUND_TRIP = """
from sluice.cache import get_ai_cache
cache = get_ai_cache()
cache.sync.set_analysis("x = 1", "python", None, {"ok": 1})
print(cache.sync.get_analysis("x = 1", "python"), cache.get_stats()["enabled"])
"""


def test_cache_rollback_disables_the_cache_and_flush_spares_the_queue(
    env: dict[str, str], redis_url: str, redis_broker_url: str, key_prefix: str
) -> None:
    assert python(CACHE_ROUND_TRIP, env) == "{'ok': 1} True"
    # Step 1: CACHE_ENABLED=false -> every lookup misses and nothing is written to the store.
    store = redis.Redis.from_url(redis_url)
    before = set(store.scan_iter(match=key_prefix + "ai:*"))
    assert python(CACHE_ROUND_TRIP, {**env, "CACHE_ENABLED": "false"}) == "None False"
    assert set(store.scan_iter(match=key_prefix + "ai:*")) == before
    # Step 2: flushing the store's database leaves queued tasks (the broker's database) alone.
    python('from sluice.workers.submit import submit_task; submit_task("mon_echo", {})', env)
    broker = redis.Redis.from_url(redis_broker_url)
    assert broker.llen("high") == 1
    assert redis_url != redis_broker_url
    store.flushdb()
    assert broker.llen("high") == 1


def test_async_rollback_runs_inline_and_process_pending_drains(env: dict[str, str]) -> None:
    queued = python(
        "from sluice.workers.submit import submit_task\n"
        'for n in range(3): submit_task("mon_echo", {"n": n})\n'
        "from sluice.celery import app\nfrom sluice.workers.stats import queue_depths\n"
        "print(sum(queue_depths(app).values()))",
        env,
    )
    assert queued == "3"
    sync_env = {**env, "ASYNC_PROCESSING_ENABLED": "false"}
    # Step 2: with the flag off, a submission runs in the caller and returns its result at once.
    inline = python(
        "from sluice.workers.submit import submit_task\n"
        'print(submit_task("mon_echo", {"n": 7}).get(timeout=1))',
        sync_env,
    )
    assert inline == "{'echo': 7}"
    # Step 4: `sluice process-pending` runs what was left in the queues.
    drained = run_sluice("process-pending", env=sync_env)
    assert drained.returncode == 0, drained.stderr
    assert "executed 3, failed 0" in drained.stdout
    left = python(
        "from sluice.celery import app\nfrom sluice.workers.stats import queue_depths\n"
        "print(sum(queue_depths(app).values()))",
        env,
    )
    assert left == "0"


QUERY_TWICE = """
import os
from sqlalchemy import create_engine
from sluice.query import QueryOptimizer
optimizer = QueryOptimizer(create_engine(os.environ["SLUICE_DATABASE_URL"]))
for _ in range(2):
    optimizer.execute_query_sync("SELECT count(*) AS n FROM dead_letter_tasks", cache_ttl=60)
report = optimizer.get_optimization_report()
print(report["query_stats"]["total_queries"], report["cache_stats"]["enabled"])
"""


def test_query_cache_rollback_sends_every_query_to_the_database(env: dict[str, str]) -> None:
    assert python(QUERY_TWICE, env) == "1 True"  # the second run was a cache hit
    assert python(QUERY_TWICE, {**env, "QUERY_CACHE_ENABLED": "false"}) == "2 False"


def test_index_rollback_is_a_migration_downgrade(env: dict[str, str]) -> None:
    count_indexes = (
        "import os, sqlalchemy as sa\n"
        "e = sa.create_engine(os.environ['SLUICE_DATABASE_URL'])\n"
        "with e.connect() as c: print(c.execute(sa.text("
        '"SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()")).scalar())'
    )
    with_004 = int(python(count_indexes, env))
    down = run_sluice("db", "downgrade", "001", env=env)
    assert down.returncode == 0, down.stderr
    assert int(python(count_indexes, env)) < with_004
    assert run_sluice("db", "upgrade", env=env).returncode == 0
    assert int(python(count_indexes, env)) == with_004


COMPRESS = """
from sluice.cdn import get_cdn_manager
body, headers = get_cdn_manager().process_resource("body{color:red}" * 200, "/static/app.css", "br, gzip")
print(headers.get("Content-Encoding", "identity"), len(body))
"""


def test_cdn_compression_rollback_serves_identity(env: dict[str, str]) -> None:
    encoding, _ = python(COMPRESS, env).split()
    assert encoding in {"br", "gzip"}
    assert python(COMPRESS, {**env, "CDN_COMPRESSION_ENABLED": "false"}) == "identity 3000"


def test_health_answers_after_a_rollback_restart(env: dict[str, str]) -> None:
    report = python(
        "from sluice.monitoring.health import health_report\n"
        "ok, body = health_report()\nprint(body['failed'])",
        {**env, "CACHE_ENABLED": "false", "QUERY_CACHE_ENABLED": "false"},
    )
    assert report == "['workers']"  # no worker in this test; every other component passes
