"""`/metrics`, `/health` and `/stats` after a real workload: prefork workers on Redis, PostgreSQL.

The workload runs in separate processes (a driver and a two-child worker), the endpoint in a third,
so every value scraped must have travelled through the shared store: nothing is read from the
process that recorded it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, stop_processes
from tests.monitoring_support import (
    get,
    get_json,
    monitoring_env,
    start_server,
    start_worker,
)

pytestmark = pytest.mark.integration

DRIVER = """
import os, time
from sqlalchemy import create_engine
from sluice.cache import get_ai_cache
from sluice.cdn import get_cdn_manager
from sluice.celery import app
from sluice.query import QueryOptimizer
from sluice.workers.submit import submit_task

echoes = [submit_task("mon_echo", {"n": n}) for n in range(6)]
broken = [submit_task("mon_broken", {"n": n}) for n in range(2)]
assert [r.get(timeout=60)["echo"] for r in echoes] == list(range(6))
for r in broken:
    r.get(timeout=60, propagate=False)
# Three messages nobody consumes, at three priorities: three Redis sub-lists of the "low" queue.
for priority in (0, 5, 9):
    app.send_task("sluice.handlers.mon_echo", ({},), queue="low", priority=priority)

cache = get_ai_cache().sync
cache.set_analysis("print(1)", "python", None, {"ok": True})
for _ in range(3):
    assert cache.get_analysis("print(1)", "python") == {"ok": True}
assert cache.get_analysis("print(2)", "python") is None

optimizer = QueryOptimizer(create_engine(os.environ["SLUICE_DATABASE_URL"]), slow_threshold_ms=250)
for _ in range(2):
    optimizer.execute_query_sync("SELECT 1 AS one", cache_ttl=60)
optimizer.execute_query_sync("SELECT pg_sleep(0.3)", use_cache=False)
optimizer.cache.flush_stats()  # a short-lived process: its counters would wait for the interval

get_cdn_manager().update_edge_hit_ratio()
get_ai_cache().close()
"""
NGINX_LOG = "".join(
    f'1.2.3.4 - - [01/Jan/2025:00:00:0{i} +0000] "GET /static/a.js HTTP/1.1" 200 10 cache={s}\n'
    for i, s in enumerate(["HIT", "HIT", "MISS", "HIT", "-"])
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


def test_metrics_after_a_real_workload(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> None:
    edge_log = tmp_path / "edge.log"
    edge_log.write_text(NGINX_LOG)
    env = monitoring_env(
        tmp_path, redis_url, redis_broker_url, key_prefix, pg_schema,
        SLUICE_CDN_EDGE_LOGS=str(edge_log),
    )  # fmt: skip
    assert (
        subprocess.run(
            [sys.executable, "-m", "sluice.cli", "db", "upgrade"], env=env, cwd=ROOT, check=False
        ).returncode
        == 0
    )
    worker = start_worker(env, tmp_path / "worker.log", "critical,high,normal")
    server = None
    try:
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        assert driver.returncode == 0, driver.stderr[-3000:]
        server, base = start_server(env)

        expected = {
            ("sluice_tasks_total", (("queue", "high"), ("event", "submitted"))): 6,
            ("sluice_tasks_total", (("queue", "high"), ("event", "completed"))): 6,
            ("sluice_tasks_total", (("queue", "normal"), ("event", "failed"))): 2,
            ("sluice_tasks_total", (("queue", "normal"), ("event", "dead_lettered"))): 2,
            ("sluice_handler_tasks_total", (("handler", "mon_echo"), ("event", "completed"))): 6,
            ("sluice_task_duration_seconds_count",
             (("handler", "mon_echo"), ("outcome", "success"), ("queue", "high"))): 6,
            ("sluice_task_duration_seconds_count",
             (("handler", "mon_broken"), ("outcome", "failure"), ("queue", "normal"))): 2,
            ("async_queue_size", (("queue", "low"),)): 3,
            ("sluice_queue_messages", (("queue", "low"),)): 3,
            ("async_queue_size", (("queue", "high"),)): 0,
            ("sluice_workers_online", ()): 1,
            ("ai_cache_hit_rate", ()): 0.75,
            ("sluice_ai_cache_misses_total", (("content_type", "analysis"),)): 1,
            ("sluice_query_cache_hits_total", ()): 1,
            ("sluice_query_cache_misses_total", ()): 1,
            ("cdn_cache_hit_ratio", ()): 0.75,
            ("sluice_cdn_edge_requests_total", (("result", "hit"),)): 3,
        }  # fmt: skip
        # Worker children flush their counters about once a second: poll until they have.
        deadline = time.monotonic() + 30
        while True:
            status, text = get(base + "/metrics")
            scraped = samples(text)
            wrong = {
                (name, labels): (value(scraped, name, **dict(labels)), want)
                for (name, labels), want in expected.items()
                if value(scraped, name, **dict(labels)) != want
            }
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200
        assert not wrong, wrong

        l1 = value(scraped, "sluice_ai_cache_hits_total", content_type="analysis", tier="l1")
        l2 = value(scraped, "sluice_ai_cache_hits_total", content_type="analysis", tier="l2")
        assert (l1 or 0) + (l2 or 0) == 3
        # The three "low" messages really are spread over Redis priority sub-lists.
        broker = redis.Redis.from_url(redis_broker_url)
        low_lists = [k for k in broker.keys("low*") if broker.type(k) == b"list"]
        assert len(low_lists) >= 2, low_lists

        # The pg_sleep(0.3) statement: slow, over 200 ms, and in db_query_latency's 500 ms bucket.
        slow = value(scraped, "sluice_db_slow_queries_total", operation="select", table="-")
        assert slow == 1
        select = {"operation": "select", "table": "-"}
        under_200 = value(scraped, "db_query_latency_bucket", le="200.0", **select)
        under_500 = value(scraped, "db_query_latency_bucket", le="500.0", **select)
        total = value(scraped, "db_query_latency_count", **select)
        assert under_200 is not None and under_500 is not None and total is not None
        assert under_500 - under_200 == 1
        assert value(scraped, "sluice_db_query_duration_seconds_count", **select) == total
        assert value(scraped, "sluice_db_query_duration_seconds_sum", **select) >= 0.3

        for source in ("tasks", "workers", "ai_cache", "query_cache", "recorded", "cdn"):
            assert value(scraped, "sluice_metrics_source_up", source=source) == 1, source

        status, health = get_json(base + "/health")
        assert status == 200, health
        assert set(health["checks"]) == {"broker", "consumers", "store", "database", "workers"}

        status, stats = get_json(base + "/stats")
        assert status == 200
        assert stats["cache"]["global"] == {"hits": 3, "misses": 1, "hit_rate": 0.75}
        assert stats["queue"]["completed"] == 6 and stats["queue"]["dead_lettered"] == 2
        assert stats["query"]["cache_stats"]["hits"] == 1
        assert stats["query"]["latency"]["statements"] == 2  # SELECT 1 once (then cached), pg_sleep
        assert stats["cdn"]["cdn_cache_hit_ratio"]["ratio"] == 0.75

        # A component goes down: /health still answers, 503, naming it.
        stop_processes(worker)
        status, health = get_json(base + "/health")
        assert status == 503
        assert health["failed"] == ["workers"], health
    finally:
        stop_processes(worker, *([server] if server is not None else []))
