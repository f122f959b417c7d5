"""``celery -A sluice worker|inspect ping|beat`` against Redis, as an operator runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, WorkerProcess, service_env


def _celery(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "sluice", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_worker_answers_inspect_ping_and_runs_a_task(tmp_path: Path, redis_broker_url: str) -> None:
    env = service_env(
        tmp_path, SLUICE_BROKER_URL=redis_broker_url, SLUICE_RESULT_BACKEND=redis_broker_url
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="critical,high,normal,low")
    try:
        worker.wait_ready()
        ping = _celery("inspect", "ping", "--timeout", "5", env=env)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "pong" in ping.stdout
        queues = _celery("inspect", "active_queues", "--timeout", "5", env=env)
        for name in ("critical", "high", "normal", "low"):
            assert f"'name': '{name}'" in queues.stdout
        assert "'name': 'batch'" not in queues.stdout
    finally:
        worker.stop()


def test_beat_starts_and_schedules(tmp_path: Path, redis_broker_url: str) -> None:
    env = service_env(
        tmp_path, SLUICE_BROKER_URL=redis_broker_url, SLUICE_RESULT_BACKEND=redis_broker_url
    )
    (tmp_path / "data").mkdir(parents=True)
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sluice", "beat", "--loglevel", "DEBUG",
         "-f", str(tmp_path / "beat.log")],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        log_file = tmp_path / "beat.log"
        while time.monotonic() < deadline:
            if log_file.exists() and "beat: Starting" in log_file.read_text():
                break
            assert beat.poll() is None, beat.stderr.read() if beat.stderr else ""
            time.sleep(0.2)
        time.sleep(1)
        assert beat.poll() is None, "beat must keep running"
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(20)
    text = (tmp_path / "beat.log").read_text()
    assert "beat: Starting" in text
    assert "prune-analysis-sessions" in text  # the schedule, logged at DEBUG on start-up
    assert "Traceback" not in text
    assert (tmp_path / "data" / "celerybeat-schedule").exists() or any(
        p.name.startswith("celerybeat-schedule") for p in (tmp_path / "data").iterdir()
    )
