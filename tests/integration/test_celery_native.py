"""Handlers and plain ``@sluice_task`` functions as Celery sees them: real workers, Flower, Redis.

Every handler is listed by its own name in ``celery inspect registered`` and in Flower's task
list; a plain decorated task lands on the queue of its priority, is limited by a named global rate
limit shared by two worker processes, retries through Celery, is dead-lettered with its payload
after its last retry (``sluice dlq list``/``show``) and replays.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chord, group
from celery.result import AsyncResult

import tests.worker_handlers as handlers
from sluice.celery import app as celery_app
from sluice.errors import TaskFailed
from sluice.workers import AsyncTaskQueue, DeadLetterQueue, Priority, TaskHandle, submit_task
from sluice.workers.stats import queue_depths
from tests.conftest import ROOT, service_env
from tests.integration.test_compose import free_port
from tests.integration.test_flower import AUTH, api
from tests.integration.test_workers_redis import Cluster, cluster  # noqa: F401 - fixture
from tests.worker_fixtures import wait_for

pytestmark = pytest.mark.integration
PRIORITY_QUEUES = "critical,high,normal,low"
HANDLERS = ("t_record", "t_poison", "t_chunk", "t_micro", "t_limited")
BUILTIN = ("analysis", "embedding", "security_alert", "analysis_session")
PLAIN = ("tests.limited_call", "tests.later", "tests.total")


@pytest.fixture
def cluster_env() -> dict[str, str]:
    return {"SLUICE_RATE_LIMITS": "t=5:5"}


@pytest.fixture
def flower(cluster: Cluster) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sluice", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={AUTH}"],
        env=cluster.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                api(base, "/api/workers")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and process.poll() is None, "no flower"
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        process.wait(15)


def _inspect_registered(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "sluice", "inspect", "registered", "--timeout", "5"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_handlers_and_plain_tasks_are_celery_native(cluster: Cluster, flower: str) -> None:  # noqa: F811
    # A plain task lands on the queue of its priority: its default, or the one asked per call.
    queued = [
        handlers.limited_call.delay("q-high"),
        handlers.limited_call.apply_async(("q-critical",), priority=Priority.CRITICAL),
        handlers.limited_call.s("q-low").apply_async(priority="low"),
    ]
    depths = queue_depths(celery_app)
    assert {q: n for q, n in depths.items() if n} == {"high": 1, "critical": 1, "low": 1}

    first = cluster.worker(PRIORITY_QUEUES, 2)
    second = cluster.worker(PRIORITY_QUEUES, 2)
    assert [h.get(timeout=60)["priority"] for h in queued] == [7, 9, 3]  # current_priority

    # inspect registered: every handler by its own name, on both workers, and the plain tasks
    registered = _inspect_registered(cluster.env)
    for name in [*(f"sluice.handlers.{h}" for h in HANDLERS + BUILTIN), *PLAIN]:
        assert registered.count(f"* {name}\n") == 2, name
    assert "sluice.run_handler" not in registered

    # the global limit "t" (5/s, burst 5) is shared by both worker processes
    limited = [handlers.limited_call.delay(f"r{i}") for i in range(25)]
    results = [h.get(timeout=120) for h in limited]
    times = sorted(r["at"] for r in results)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 5 + 5 * (times[j] - times[i]) + 1
    hosts = {first.name.split("@")[0], second.name.split("@")[0]}
    assert {r["worker"].split("@")[0] for r in results} == hosts  # both took a share
    assert all(h.retries == 0 for h in limited)  # waiting for a token is not a retry

    # retries through Celery, then a dead letter with the call's payload; the CLI shows it
    bad = handlers.limited_call.apply_async(("bad",), {"fail": True}, priority="critical")
    with pytest.raises(TaskFailed, match="dead-letter entry"):
        TaskHandle(bad).get(timeout=60)
    assert cluster.store.hgetall_counters("attempts")["bad"] == 3
    listed = cluster.sluice("dlq", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "tests.limited_call" in listed.stdout and "critical" in listed.stdout
    (entry,) = DeadLetterQueue().list()
    shown = cluster.sluice("dlq", "show", str(entry["id"]))
    detail = json.loads(shown.stdout)
    assert detail["payload"] == {"args": ["bad"], "kwargs": {"fail": True}}
    assert detail["attempts"] == 3 and detail["priority"] == int(Priority.CRITICAL)
    assert [h["attempt"] for h in detail["history"]] == [1, 2, 3]
    assert "plain task bad failed" in detail["error"]

    cluster.store.set(handlers.FIXED_FLAG, True)
    replay = cluster.sluice("dlq", "replay", str(entry["id"]))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    replayed = AsyncResult(replay.stdout.split("as task", 1)[1].split()[0], app=celery_app)
    assert replayed.get(timeout=60)["key"] == "bad"
    assert replayed.name == "tests.limited_call"

    # canvas: groups and chords of plain tasks; RetryLater is neither a retry nor a dead letter
    assert len(group(handlers.limited_call.s(f"g{i}") for i in range(3))().get(timeout=60)) == 3
    body = handlers.total.s()
    assert chord(handlers.limited_call.s(f"c{i}") for i in range(3))(body).get(timeout=60) == 3
    later = handlers.later.delay("x")
    assert later.get(timeout=60) == 3 and later.retries == 0
    assert DeadLetterQueue().count() == 1

    # Flower's task list names each task by its own name
    record = submit_task("t_record", {"id": "flower", "label": "f"})
    poison = submit_task("t_poison", {"id": "f"}, Priority.LOW)
    record.get(timeout=60)
    poison.get(timeout=60, propagate=False)
    expected = {
        record.id: "sluice.handlers.t_record",
        poison.id: "sluice.handlers.t_poison",
        bad.id: "tests.limited_call",
        later.id: "tests.later",
        limited[0].id: "tests.limited_call",
    }

    def flower_names() -> dict[str, Any] | None:
        tasks = api(flower, "/api/tasks")
        names = {tid: tasks[tid]["name"] for tid in expected if tid in tasks}
        return names if names == expected else None

    wait_for(flower_names, 30, "flower to list every task by its own name")
    workers = api(flower, "/api/workers?refresh=1")
    for info in workers.values():
        assert "sluice.handlers.t_record" in info["registered"]
        assert "tests.limited_call" in info["registered"]

    def plain_counts() -> dict[str, int] | None:
        counts = AsyncTaskQueue().get_stats()["by_handler"].get("tests.limited_call", {})
        # 3 queued, 25 limited, the replay, a group and a chord of 3: all completed
        return counts if counts.get("completed", 0) >= 3 + 25 + 1 + 3 + 3 else None

    counts = wait_for(plain_counts, 15, "the plain task's cluster-wide counters")
    assert counts["dead_lettered"] == 1 and counts["retries"] == 2
    assert counts["submitted"] == 3 + 25 + 1 + 3 + 3 + 1  # the replay is a new submission


def test_a_message_for_an_unknown_task_is_kept_as_a_dead_letter(cluster: Cluster) -> None:  # noqa: F811
    cluster.worker(PRIORITY_QUEUES, 1)
    sent = celery_app.send_task(
        "sluice.handlers.not_deployed", ({"k": 1},), queue="high", headers={"sluice_priority": 7}
    )
    plain = celery_app.send_task("myapp.not_deployed", (1, "two"), {"three": 3}, queue="low")
    entries = wait_for(lambda: len(DeadLetterQueue().list()) == 2 and DeadLetterQueue().list(), 30,
                       "two dead letters")  # fmt: skip
    by_id = {e["task_id"]: e for e in entries}
    assert by_id[sent.id]["task_name"] == "not_deployed"
    assert by_id[sent.id]["payload"] == {"k": 1} and by_id[sent.id]["queue"] == "high"
    assert "NotRegistered" in by_id[sent.id]["error"]
    assert by_id[plain.id]["task_name"] == "myapp.not_deployed"
    assert by_id[plain.id]["payload"] == {"args": [1, "two"], "kwargs": {"three": 3}}


def test_a_handler_module_that_fails_to_import_stops_the_worker(tmp_path: Path) -> None:
    (tmp_path / "exploding_handlers.py").write_text(
        "raise RuntimeError('cannot reach the model registry')\n"
    )
    env = service_env(
        tmp_path, SLUICE_HANDLER_MODULES="exploding_handlers", PYTHONPATH=f"{tmp_path}:{ROOT}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-c", "1",
         "--without-gossip", "--without-mingle"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "cannot import 'exploding_handlers'" in output
    assert "RuntimeError: cannot reach the model registry" in output
