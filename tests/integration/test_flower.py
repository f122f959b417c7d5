"""Flower on the Redis broker: a real worker runs sluice tasks, Flower's HTTP API shows them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, stop_processes
from tests.integration.test_compose import free_port
from tests.monitoring_support import monitoring_env, start_worker

pytestmark = pytest.mark.integration
AUTH = "ops:flower-test-pw"

SUBMIT = """
from sluice.workers.submit import submit_task
results = [submit_task("mon_echo", {"n": n}) for n in range(4)]
print(",".join(r.id for r in results))
assert [r.get(timeout=60)["echo"] for r in results] == list(range(4))
"""


def api(base: str, path: str) -> Any:
    request = urllib.request.Request(base + path)
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_flower_shows_sluice_workers_queues_and_tasks(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> None:
    env = monitoring_env(tmp_path, redis_url, redis_broker_url, key_prefix, pg_schema)
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sluice", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={AUTH}"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    base = f"http://127.0.0.1:{port}"
    try:
        worker = start_worker(env, tmp_path / "worker.log", "critical,high,normal,low")
        # Flower must be listening before the tasks run: it learns of tasks from live events.
        deadline = time.monotonic() + 30
        while True:
            try:
                workers = api(base, "/api/workers?refresh=1")
                if workers:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline and flower.poll() is None, "flower did not start"
            time.sleep(0.5)
        (name, info), *_ = workers.items()
        assert name.startswith("mon-")
        consuming = {q["name"] for q in info["active_queues"]}
        assert consuming == {"critical", "high", "normal", "low"}
        assert "sluice.handlers.mon_echo" in info["registered"]

        submitted = subprocess.run(
            [sys.executable, "-c", SUBMIT], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        ids = set(submitted.stdout.strip().split(","))
        deadline = time.monotonic() + 30
        while True:
            tasks = api(base, "/api/tasks")
            done = {tid for tid, t in tasks.items() if tid in ids and t["state"] == "SUCCESS"}
            if done == ids or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done == ids
        task = tasks[next(iter(ids))]
        assert task["name"] == "sluice.handlers.mon_echo"
        assert task["routing_key"] == "high" and '"n"' in task["args"]
    finally:
        stop_processes(flower, *([worker] if worker is not None else []))
