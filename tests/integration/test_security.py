"""Security checks across process boundaries: no pickle, no steering, no interpolation, no escapes,
no leaked keys. Each test attacks the real component the way an adversary with write access to one
boundary (Redis, a request, a file tree) would."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from sluice.cache import AIResultCache, CacheConfig, CacheKeyGenerator
from sluice.errors import InvalidInput
from sluice.store import RedisStore
from tests.conftest import ROOT, WorkerProcess, service_env


class _Marker:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).touch, ())


def test_pickled_celery_message_is_refused_never_executed(
    tmp_path: Path, redis_broker_url: str
) -> None:
    """A pickle-serialised task pushed onto a sluice queue is rejected by the worker, not run."""
    marker = tmp_path / "executed"
    env = service_env(
        tmp_path, SLUICE_BROKER_URL=redis_broker_url, SLUICE_RESULT_BACKEND=redis_broker_url
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="critical,high,normal,low")
    try:
        worker.wait_ready()
        # An attacker with write access to the broker, using any Celery client.
        attacker = Celery(broker=redis_broker_url, set_as_current=False)
        attacker.send_task(
            "sluice.handlers.analysis",
            args=[_Marker(str(marker))],
            queue="critical",
            serializer="pickle",
        )
        attacker.close()
        deadline = time.monotonic() + 20
        log = tmp_path / "worker.log"
        while time.monotonic() < deadline and "ContentDisallowed" not in log.read_text():
            time.sleep(0.2)
    finally:
        worker.stop()
    text = (tmp_path / "worker.log").read_text()
    assert "ContentDisallowed" in text  # refused by accept_content = ["json"], and logged
    assert not marker.exists()
    assert (
        redis.Redis.from_url(redis_broker_url).llen("critical") == 0
    )  # rejected, not left to retry


def test_pickle_planted_in_the_cache_is_a_counted_miss(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    marker = tmp_path / "executed"
    store = RedisStore(redis_url, prefix=key_prefix)
    cache = AIResultCache(store=store, config=CacheConfig(stats_flush_interval=0.0), enabled=True)
    try:
        cache.sync.set_analysis("x = 1", "python", None, {"findings": []})
        client = redis.Redis.from_url(redis_url)
        keys = [k for k in client.scan_iter(match=f"{key_prefix}ai:analysis:*")]
        assert keys, "the entry must be in Redis"
        for key in keys:
            client.set(key, pickle.dumps(_Marker(str(marker))))
        cache.l1.clear()
        assert cache.sync.get_analysis("x = 1", "python") is None
        assert cache.get_stats()["by_type"]["analysis"]["corrupt"] >= 1
        assert not marker.exists()
    finally:
        cache.close()
        store.close()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("ab", "python", ["c"]), ("a", "python", ["bc"])),
        (("x", "py", None), ("x", "python", None)),
        (("a\x00b", "python", None), ("a", "python", ["\x00b"])),
        (("code", "python", ["security", "quality"]), ("code", "python", ["security,quality"])),
    ],
)
def test_crafted_input_cannot_steer_a_cache_key_into_another_entry(
    first: tuple[Any, ...], second: tuple[Any, ...]
) -> None:
    a, b = CacheKeyGenerator.analysis(*first), CacheKeyGenerator.analysis(*second)
    assert a.key != b.key and a.fingerprint != b.fingerprint


def test_query_parameters_are_never_interpolated(
    pg_schema: str, redis_url: str, key_prefix: str
) -> None:
    from sluice.query import QueryOptimizer

    engine = sa.create_engine(pg_schema)
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.exec_driver_sql("INSERT INTO notes (body) VALUES ('hello')")
    store = RedisStore(redis_url, prefix=key_prefix)
    optimizer = QueryOptimizer(engine, store=store, cache_enabled=True)
    evil = "x'; DROP TABLE notes; --"
    try:
        rows, _ = optimizer.execute_query_sync(
            "SELECT body FROM notes WHERE body = :body OR id = :id", {"body": evil, "id": 1}
        )
        assert rows == [{"body": "hello"}]
        assert not any(evil in statement for statement in seen)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM notes").scalar() == 1
        # The cache key of the crafted value is its own: no other parameter set reads its rows.
        other, _ = optimizer.execute_query_sync(
            "SELECT body FROM notes WHERE body = :body OR id = :id", {"body": evil, "id": 2}
        )
        assert other == []
    finally:
        optimizer.close()
        store.close()
        engine.dispose()


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "js/../../secret.txt", "/etc/passwd", "..\\secret.txt", "js/link/secret.txt"],
)
def test_asset_paths_cannot_escape_the_static_root(tmp_path: Path, path: str) -> None:
    from sluice.cdn.paths import resolve_inside

    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    (root / "js" / "link").symlink_to(tmp_path)  # a symlink pointing out of the root
    with pytest.raises(InvalidInput):
        resolve_inside(root, path)


def test_api_key_never_appears_in_logs_stats_dead_letters_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An OpenAI-compatible provider rejecting the key: the failure is dead-lettered and reported
    everywhere without the key."""
    key = "sk-test-SECRET-0123456789abcdef"
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys\n"
        "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
        "import threading\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        body = json.dumps({'error': {'message': 'Incorrect API key provided: '\n"
        "                          + self.headers['Authorization'].split()[-1]}}).encode()\n"
        "        self.send_response(401); self.send_header('Content-Type', 'application/json')\n"
        "        self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        "server = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "import os\n"
        "os.environ['SLUICE_AI_BASE_URL'] = f'http://127.0.0.1:{server.server_port}/v1'\n"
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from sluice.workers import DeadLetterQueue, submit_task\n"
        "from sluice.cache import get_ai_cache\n"
        "DeadLetterQueue().ensure_schema()\n"
        "payload = {'session_id': 1, 'path': 'a.py', 'content': 'x=1', 'language': 'python'}\n"
        "r = submit_task('analysis', payload)\n"
        "print('RESULT', r.result)\n"
        "print('DLQ', json.dumps(DeadLetterQueue().list()))\n"
        "print('STATS', json.dumps(get_ai_cache().get_stats()))\n"
    )
    env = service_env(
        tmp_path,
        SLUICE_AI_PROVIDER="openai",
        SLUICE_AI_API_KEY=key,
        SLUICE_AI_MAX_RETRIES="0",
        ASYNC_PROCESSING_ENABLED="false",
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "DLQ" in result.stdout, output[-3000:]
    assert '"task_name": "analysis"' in result.stdout  # dead-lettered after its retries
    assert "401" in output  # the failure is reported...
    assert key not in output  # ...but the key is nowhere: logs, result, dead letter, stats
    config = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "config"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0 and key not in config.stdout + config.stderr
    logging.getLogger("sluice").info(
        "settings: %r", __import__("sluice.settings").settings.load_settings(env)
    )
    assert key not in caplog.text
