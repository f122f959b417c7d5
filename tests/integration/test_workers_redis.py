"""The task layer on a real Redis broker with real ``celery -A sluice worker`` processes.

Every property is asserted from what the handlers of :mod:`tests.worker_handlers` recorded in the
shared store (counts, execution order), never from wall-clock time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

import tests.worker_handlers as handlers
from sluice.celery import app as celery_app
from sluice.errors import TaskFailed
from sluice.store import Store, get_store
from sluice.workers import AsyncTaskQueue, DeadLetterQueue, Priority, submit_batch, submit_task
from tests.conftest import ROOT, WorkerProcess, run_sluice, service_env, stop_processes
from tests.worker_fixtures import settings_env, wait_for

pytestmark = pytest.mark.integration


class Cluster:
    """The environment of one test: settings for this process and for the subprocesses."""

    def __init__(self, tmp_path: Path, env: dict[str, str], broker_url: str) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.broker_url = broker_url
        self.workers: list[WorkerProcess] = []

    @property
    def store(self) -> Store:
        return get_store()

    def worker(
        self, queues: str = "critical,high,normal,low,batch", concurrency: int = 2, *extra: str
    ) -> WorkerProcess:
        """Start a worker (``extra`` celery options appended) and wait until it is ready."""
        log_file = self.tmp_path / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess.__new__(WorkerProcess)
        worker.log_file = log_file
        worker.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-Q", queues,
             "-c", str(concurrency), "-n", worker.name, "--loglevel", "INFO",
             "-f", str(log_file), "--without-gossip", "--without-mingle", *extra],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def runs(self) -> dict[str, int]:
        return self.store.hgetall_counters("runs")

    def order(self) -> list[str]:
        return [key.split("|", 1)[1] for key in sorted(self.store.hgetall_counters("order"))]

    def sluice(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_sluice(*args, env=self.env, timeout=120)


@pytest.fixture
def cluster_env() -> dict[str, str]:
    """Extra settings for one test (override in a test module or with indirect parametrize)."""
    return {}


@pytest.fixture
def cluster(
    tmp_path: Path,
    redis_url: str,
    redis_broker_url: str,
    key_prefix: str,
    pg_schema: str,
    cluster_env: dict[str, str],
) -> Iterator[Cluster]:
    settings = {
        "SLUICE_BROKER_URL": redis_broker_url,
        "SLUICE_RESULT_BACKEND": redis_broker_url,
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_KEY_PREFIX": key_prefix,
        "SLUICE_DATABASE_URL": pg_schema,
        "SLUICE_HANDLER_MODULES": "tests.worker_handlers",
        "SLUICE_BATCH_FLUSH_INTERVAL": "0.2",
        **cluster_env,
    }
    env = service_env(tmp_path, **settings)
    upgraded = run_sluice("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    cluster = Cluster(tmp_path, env, redis_broker_url)
    try:
        with settings_env(reconfigure_celery=True, **settings):
            yield cluster
    finally:
        stop_processes(*(worker.process for worker in cluster.workers))


def _stats() -> dict[str, Any]:
    return AsyncTaskQueue().get_stats()


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return [grand for child in children for grand in [child, *_descendants(child)]]


# -- priorities and stats ----------------------------------------------------------------------


def test_strict_priority_order_and_cluster_wide_stats(cluster: Cluster) -> None:
    levels = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL]
    handles = [
        submit_task("t_record", {"id": f"{level.name}-{i}", "label": level.name}, level)
        for i in range(4)
        for level in levels
    ]
    stats = _stats()
    assert stats["submitted"] == 16  # counted in this process
    assert stats["queue"]["pending"] == 16
    assert {q: stats["by_queue"][q]["pending"] for q in ("critical", "high", "normal", "low")} == {
        "critical": 4,
        "high": 4,
        "normal": 4,
        "low": 4,
    }
    # Redis keeps these messages in priority sub-lists: the base lists alone are not the depth.
    raw = redis.Redis.from_url(cluster.broker_url)
    base_lists = sum(int(raw.llen(q)) for q in ("critical", "high", "normal", "low"))
    raw.close()
    assert base_lists < 16

    cluster.worker("critical,high,normal,low", 1)
    for handle in handles:
        handle.get(timeout=60)
    assert cluster.order() == ["CRITICAL"] * 4 + ["HIGH"] * 4 + ["NORMAL"] * 4 + ["LOW"] * 4
    # completions are counted in the worker process and reach the shared totals on their own
    stats = wait_for(lambda: (s := _stats())["completed"] == 16 and s, 15, "completed == 16")
    assert stats["submitted"] == 16 and stats["failed"] == 0 and stats["success_rate"] == 1.0
    assert stats["queue"] == {"pending": 0, "running": 0}
    assert stats["by_handler"]["t_record"]["completed"] == 16
    assert stats["by_queue"]["critical"]["completed"] == 4
    assert stats["cluster_wide"] is True


# -- chord batching and micro-batching ---------------------------------------------------------


def test_chord_batching_isolates_a_poison_item(cluster: Cluster) -> None:
    cluster.worker("batch", 2, "--prefetch-multiplier", "16")
    payloads = [{"id": i, "poison": i == 37, "text": f"snippet {i}"} for i in range(100)]
    results = submit_batch("t_chunk", payloads).get(timeout=90)
    assert len(results) == 100
    for i, result in enumerate(results):
        if i == 37:
            assert isinstance(result, TaskFailed)
        else:
            assert result == {"id": i, "double": 2 * i}
    runs = cluster.runs()
    assert runs.pop("37") == 3  # once in its chunk, then twice alone (max_retries=2)
    assert set(runs.values()) == {1} and len(runs) == 99
    assert cluster.store.hgetall_counters("batch_sizes") == {"10": 10, "1": 2}

    (entry,) = DeadLetterQueue().list()
    assert entry["task_name"] == "t_chunk" and entry["queue"] == "batch"
    assert entry["payload"] == payloads[37]
    assert entry["attempts"] == 3 and len(entry["history"]) == 3
    assert "poison item 37" in entry["error"]

    cluster.store.set(handlers.FIXED_FLAG, True)
    replayed = AsyncResult(DeadLetterQueue().replay(entry["id"]), app=celery_app)
    assert replayed.get(timeout=30) == {"id": 37, "double": 74}
    stats = wait_for(lambda: (s := _stats())["completed"] == 100 and s, 15, "completed == 100")
    assert stats["batches_processed"] >= 10 and stats["dead_lettered"] == 1


def test_micro_batching_groups_single_submissions(cluster: Cluster) -> None:
    cluster.worker("batch", 2, "--prefetch-multiplier", "64")
    handles = [submit_task("t_micro", {"id": i}) for i in range(50)]
    assert all(h.get(timeout=60) == {"id": i} for i, h in enumerate(handles))
    assert set(cluster.runs().values()) == {1} and len(cluster.runs()) == 50
    calls = cluster.store.get_counter("batch_calls")
    assert 1 <= calls <= 10, calls


# -- reliability -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cluster_env", [{"SLUICE_VISIBILITY_TIMEOUT": "10", "SLUICE_MAX_COUNTDOWN": "5"}]
)
def test_sigkill_mid_run_loses_nothing(cluster: Cluster) -> None:
    total = 500
    handles = [
        submit_task("t_record", {"id": i, "sleep": 0.01}, Priority.NORMAL) for i in range(total)
    ]
    victim = cluster.worker("critical,high,normal,low", 2)
    wait_for(lambda: len(cluster.runs()) >= total // 4, 60, "a quarter of the tasks to run")
    for pid in [victim.process.pid, *_descendants(victim.process.pid)]:
        os.kill(pid, signal.SIGKILL)
    victim.process.wait()
    killed_at = time.monotonic()
    done_at_kill = len(cluster.runs())
    assert done_at_kill < total, "the worker finished before it was killed"
    # Redis hands a dead consumer's unacknowledged messages out again after the visibility
    # timeout; a worker starting after it restores them.
    time.sleep(max(0.0, killed_at + 11 - time.monotonic()))
    cluster.worker("critical,high,normal,low", 2)
    for handle in handles:
        handle.get(timeout=120)
    runs = cluster.runs()
    assert sorted(int(k) for k in runs) == list(range(total))  # every payload ran at least once
    assert sum(runs.values()) - total <= 4  # at most the killed worker's in-flight ones twice
    assert _stats()["queue"]["pending"] == 0


@pytest.mark.parametrize("cluster_env", [{"SLUICE_RATE_LIMITS": "t=5:5"}])
def test_global_rate_limit_across_worker_processes(cluster: Cluster) -> None:
    cluster.worker("critical,high,normal,low", 2)
    cluster.worker("critical,high,normal,low", 2)
    handles = [submit_task("t_limited", {"id": i}) for i in range(25)]
    results = [h.get(timeout=120) for h in handles]
    assert [r["id"] for r in results] == list(range(25))
    # the shared bucket: in any window, at most burst + rate x window tasks were admitted
    times = sorted(r["at"] for r in results)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 5 + 5 * (times[j] - times[i]) + 1
    assert set(cluster.runs().values()) == {1}
    stats = wait_for(lambda: (s := _stats())["completed"] == 25 and s, 15, "completed == 25")
    assert stats["rate_limited"] > 0 and stats["retries"] == 0 and stats["failed"] == 0
    for i, handle in enumerate(handles):  # result_extended keeps the request: no retry used
        assert handle.retries == 0
        assert handle.name == "sluice.handlers.t_limited" and handle.args == [{"id": i}]


def test_poison_task_is_dead_lettered_and_replayed_with_the_cli(cluster: Cluster) -> None:
    cluster.worker("critical,high,normal,low", 2)
    payload = {"id": "px", "nested": {"keep": [1, "two", None]}, "text": "naïve"}
    handle = submit_task("t_poison", payload, Priority.HIGH)
    with pytest.raises(TaskFailed, match="dead-letter entry"):
        AsyncTaskQueue  # noqa: B018 - the facade's handle raises the same way
        from sluice.workers import TaskHandle

        TaskHandle(handle).get(timeout=60)
    assert cluster.store.hgetall_counters("attempts") == {"px": 3}

    listed = cluster.sluice("dlq", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "t_poison" in listed.stdout and "high" in listed.stdout
    (entry,) = DeadLetterQueue().list()
    shown = cluster.sluice("dlq", "show", str(entry["id"]))
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["payload"] == payload
    assert detail["attempts"] == 3 and detail["priority"] == int(Priority.HIGH)
    assert [h["attempt"] for h in detail["history"]] == [1, 2, 3]
    assert "poisoned payload px" in detail["error"] and "RuntimeError" in detail["traceback"]

    cluster.store.set(handlers.FIXED_FLAG, True)
    replay = cluster.sluice("dlq", "replay", str(entry["id"]))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    task_id = replay.stdout.split("as task", 1)[1].split()[0]
    assert AsyncResult(task_id, app=celery_app).get(timeout=30) == {"fixed": "px"}
    assert cluster.store.hgetall_counters("attempts") == {"px": 4}
    again = cluster.sluice("dlq", "replay", str(entry["id"]))
    assert again.returncode != 0 and "already replayed" in again.stdout + again.stderr

    refused = cluster.sluice("dlq", "purge")
    assert refused.returncode != 0
    purged = cluster.sluice("dlq", "purge", "--all")
    assert purged.returncode == 0 and "deleted 1 entries" in purged.stdout
    assert DeadLetterQueue().count() == 0
    stats = _stats()
    assert stats["retries"] == 2 and stats["dead_lettered"] == 1


def test_replay_that_fails_again_raises_its_replay_count(cluster: Cluster) -> None:
    cluster.worker("critical,high,normal,low", 2)
    handle = submit_task("t_poison", {"id": "again"})
    wait_for(lambda: handle.ready(), 60, "the poison task to fail")
    first = DeadLetterQueue().list()[0]
    AsyncResult(DeadLetterQueue().replay(first["id"]), app=celery_app).get(
        timeout=60, propagate=False
    )
    entries = DeadLetterQueue().list()
    assert [e["replays"] for e in entries] == [1, 0]
    assert entries[0]["payload"] == {"id": "again"}
    assert cluster.store.hgetall_counters("attempts") == {"again": 6}


# -- draining ----------------------------------------------------------------------------------


def test_process_pending_drains_without_a_worker(cluster: Cluster) -> None:
    for i, level in enumerate(["LOW", "NORMAL", "CRITICAL", "HIGH", "LOW"]):
        submit_task("t_record", {"id": f"r{i}", "label": level}, level)
    for i in range(3):
        submit_task("t_micro", {"id": f"m{i}"})
    submit_task("t_poison", {"id": "dead"})
    assert _stats()["queue"]["pending"] == 9

    drained = cluster.sluice("process-pending")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "executed 8, failed 1" in drained.stdout
    assert cluster.order() == ["CRITICAL", "HIGH", "NORMAL", "LOW", "LOW"]
    assert set(cluster.runs()) == {"r0", "r1", "r2", "r3", "r4", "m0", "m1", "m2"}
    assert cluster.store.hgetall_counters("attempts") == {"dead": 3}
    (entry,) = DeadLetterQueue().list()
    assert entry["payload"] == {"id": "dead"}
    assert _stats()["queue"]["pending"] == 0


_KILLED_MID_RESTORE = """
import os, sys
from kombu import Connection
from kombu.transport.redis import Mutex
import celeryconfig
with Connection(sys.argv[1], transport_options=celeryconfig.broker_transport_options) as conn:
    channel = conn.default_channel
    with Mutex(channel.client, channel.unacked_mutex_key, channel.unacked_mutex_expire):
        print(channel.unacked_mutex_key, flush=True)
        os._exit(0)  # killed while restoring: the mutex is never released
"""


def test_a_worker_killed_mid_restore_blocks_redelivery_for_seconds_not_minutes(
    tmp_path: Path, redis_broker_url: str
) -> None:
    """kombu lets one worker at a time restore a dead worker's unacknowledged messages, under a
    mutex that outlived its killed holder for 5 minutes: a message stayed invisible that long."""
    from celeryconfig import UNACKED_MUTEX_EXPIRE

    done = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_RESTORE, redis_broker_url],
        env=service_env(tmp_path, SLUICE_BROKER_URL=redis_broker_url), cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = redis.Redis.from_url(redis_broker_url)
    try:
        ttl = client.ttl(done.stdout.strip())
    finally:
        client.close()
    assert 0 < ttl <= UNACKED_MUTEX_EXPIRE <= 60, ttl
