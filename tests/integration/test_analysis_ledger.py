"""The session of ``sluice analyze`` on external workers, opened and closed by a worker.

A session task that no worker takes in time expires unrun and is sent again while the command
waits: whatever happens, exactly one session is opened, and a command that gave up leaves nothing
behind that would open one later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.analysis import runner
from sluice.settings import get_settings
from sluice.workers import submit_task
from tests.conftest import WorkerProcess, run_sluice, service_env
from tests.worker_fixtures import settings_env

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> Iterator[dict[str, str]]:
    values = {
        "SLUICE_BROKER_URL": redis_broker_url,
        "SLUICE_RESULT_BACKEND": redis_broker_url,
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_KEY_PREFIX": key_prefix,
        "SLUICE_DATABASE_URL": pg_schema,
        "SLUICE_HANDLER_MODULES": "tests.worker_handlers",
    }
    upgraded = run_sluice("db", "upgrade", env=service_env(tmp_path, **values))
    assert upgraded.returncode == 0, upgraded.stderr
    yield values


def _sessions(pg_schema: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(pg_schema)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, files_total FROM analysis_sessions"))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def test_a_session_task_that_expires_unrun_is_sent_again_and_runs_once(
    tmp_path: Path, settings: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only worker's slot is busy for longer than a try may wait: the tries before expire
    unrun, a later one opens the session, and exactly one session exists."""
    worker = WorkerProcess(
        service_env(tmp_path, **settings), tmp_path / "worker.log", queues="critical", concurrency=1
    )
    monkeypatch.setattr(runner, "SESSION_TTL", 0.8)
    try:
        worker.wait_ready()
        with settings_env(reconfigure_celery=True, **settings):
            blocker = submit_task("t_record", {"id": "block", "sleep": 3}, priority="critical")
            started = time.monotonic()
            ledger = runner._Ledger(get_settings())
            meanwhile: list[bool] = []  # whether the slot was free yet, per call
            session_id = ledger.open(tmp_path, 3, lambda: meanwhile.append(blocker.ready()))
            waited = time.monotonic() - started
            assert blocker.ready()  # opened only once the slot was free
            assert meanwhile == [False]  # once, while the first try waited, not once per try
            assert ledger.close(session_id, "completed") == []
    finally:
        worker.stop()
    assert waited > 2 * runner.SESSION_TTL  # so at least one try expired
    log = (tmp_path / "worker.log").read_text()
    assert "Discarding revoked task" in log or "expired" in log.lower(), log[-2000:]
    assert _sessions(pg_schema) == [("completed", 3)]


def test_a_command_without_workers_leaves_only_a_session_task_that_expires(
    tmp_path: Path, settings: dict[str, str], redis_broker_url: str
) -> None:
    import json

    import redis

    env = service_env(tmp_path, **settings)
    result = run_sluice("analyze", str(tmp_path), env=env, timeout=60)
    assert result.returncode == 1 and "no Celery worker answered" in result.stderr
    client = redis.Redis.from_url(redis_broker_url)
    try:
        queued = [
            json.loads(raw) for key in client.keys("critical*") for raw in client.lrange(key, 0, -1)
        ]
    finally:
        client.close()
    assert [m["headers"]["task"] for m in queued] == ["sluice.handlers.analysis_session"]
    assert queued[0]["headers"]["expires"] is not None  # discarded unrun by a later worker
