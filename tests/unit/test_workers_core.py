"""The task layer without services: validation at submit, sync mode, rate limiter, dead letters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

import tests.worker_handlers as handlers
from sluice.errors import ConfigurationError, InvalidInput, TaskFailed
from sluice.store import DiskStore, get_store
from sluice.workers import (
    AsyncTaskQueue,
    DeadLetterQueue,
    Priority,
    RateLimiter,
    TaskHandler,
    define_rate_limit,
    get_rate_limit,
    route,
    submit_batch,
    submit_task,
)
from sluice.workers import stats as worker_stats
from tests.conftest import ROOT
from tests.worker_fixtures import settings_env


def _pending() -> int:
    from sluice.celery import app

    return sum(worker_stats.queue_depths(app).values())


def _submitted() -> int:
    totals, _ = worker_stats.counters().totals()
    return int(totals["all:submitted"])


# -- priorities --------------------------------------------------------------------------------


def test_priorities_map_to_their_queues() -> None:
    assert [p.queue for p in Priority] == ["batch", "low", "normal", "high", "critical"]
    assert route("critical") == {"queue": "critical", "priority": 9}
    # kombu's Redis transport serves low numbers first, ahead of the queue order
    with settings_env(SLUICE_BROKER_URL="redis://127.0.0.1:6379/14"):
        pri = {p: route(p)["priority"] for p in Priority}
        assert pri[Priority.CRITICAL] <= pri[Priority.HIGH] < pri[Priority.NORMAL]
        assert pri[Priority.NORMAL] < pri[Priority.LOW] < pri[Priority.BATCH]
        assert route("batch") == {"queue": "batch", "priority": 9}
    assert Priority.parse(3) is Priority.LOW
    for bad in ("urgent", 4, True, None):
        with pytest.raises(InvalidInput):
            Priority.parse(bad)  # type: ignore[arg-type]


# -- validation at submit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("no_such_handler", {"id": 1}, "no handler named 'no_such_handler'"),
        ("t_record", {"id": {1, 2}}, "not JSON-serialisable"),
        ("t_record", {"blob": "x" * 300}, "over the 200-byte limit"),
        ("t_record", ["not", "a", "dict"], "must be a dict"),
    ],
)
def test_submit_rejects_bad_input_and_enqueues_nothing(
    data_dir: Path, name: str, payload: object, message: str
) -> None:
    with settings_env(SLUICE_MAX_PAYLOAD_BYTES="200"):
        before_pending, before_submitted = _pending(), _submitted()
        with pytest.raises(InvalidInput, match=message):
            submit_task(name, payload)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=message):
            asyncio.run(AsyncTaskQueue().submit(name, payload))  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=message):
            submit_batch(name, [{"id": 0}, payload, {"id": 2}])  # type: ignore[list-item]
        assert _pending() == before_pending
        assert _submitted() == before_submitted


def test_submit_batch_rejects_empty_and_non_lists(data_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        submit_batch("t_chunk", [])
    with pytest.raises(InvalidInput, match="list of dicts"):
        submit_batch("t_chunk", {"id": 1})  # type: ignore[arg-type]


def test_bad_countdown_and_priority_are_refused(data_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="countdown"):
        submit_task("t_record", {"id": 1}, countdown=-1)
    with pytest.raises(InvalidInput, match="unknown priority"):
        submit_task("t_record", {"id": 1}, priority="urgent")


# -- sync mode ---------------------------------------------------------------------------------


def test_sync_mode_runs_inline(sync_mode: DeadLetterQueue) -> None:
    handle = asyncio.run(AsyncTaskQueue().submit("t_record", {"id": 1, "label": "a"}))
    assert handle.get(timeout=5) == {"id": 1, "label": "a"}
    assert get_store().hgetall_counters("runs") == {"1": 1}
    assert _pending() == 0


def test_sync_mode_retries_then_dead_letters_then_replays(sync_mode: DeadLetterQueue) -> None:
    store = get_store()
    payload = {"id": "p1", "nested": {"keep": [1, 2, 3]}}
    handle = submit_task("t_poison", payload)
    assert handle.failed()
    assert store.hgetall_counters("attempts") == {"p1": 3}  # max_retries=2: 3 attempts
    (entry,) = sync_mode.list()
    assert entry["task_name"] == "t_poison"
    assert entry["payload"] == payload
    assert entry["attempts"] == 3 and entry["replays"] == 0
    assert [h["attempt"] for h in entry["history"]] == [1, 2, 3]
    assert "poisoned payload p1" in entry["error"]
    assert "RuntimeError" in entry["traceback"]
    stats = AsyncTaskQueue().get_stats()
    assert stats["retries"] == 2 and stats["failed"] == 1 and stats["dead_lettered"] == 1

    # a replay that fails again comes back with its replay count raised, and no loop
    sync_mode.replay(entry["id"])
    assert store.hgetall_counters("attempts") == {"p1": 6}
    newest = sync_mode.list()[0]
    assert newest["id"] != entry["id"] and newest["replays"] == 1
    with pytest.raises(InvalidInput, match="already replayed"):
        sync_mode.replay(entry["id"])

    store.set(handlers.FIXED_FLAG, True)
    task_id = sync_mode.replay(newest["id"])
    assert isinstance(task_id, str) and task_id
    assert store.hgetall_counters("attempts") == {"p1": 7}
    assert sync_mode.count() == 2
    assert len(sync_mode.list(pending_only=True)) == 0


def test_sync_mode_handle_raises_task_failed(sync_mode: DeadLetterQueue) -> None:
    handle = asyncio.run(AsyncTaskQueue().submit("t_poison", {"id": "x"}))
    with pytest.raises(TaskFailed, match="dead-letter entry"):
        handle.get(timeout=5)


def test_sync_submit_batch_isolates_the_failing_item(sync_mode: DeadLetterQueue) -> None:
    store = get_store()
    payloads = [{"id": i, "poison": i == 7} for i in range(25)]
    results = asyncio.run(AsyncTaskQueue().submit_batch("t_chunk", payloads))
    assert len(results) == 25
    for i, result in enumerate(results):
        if i == 7:
            assert isinstance(result, TaskFailed)
        else:
            assert result == {"id": i, "double": 2 * i}
    runs = store.hgetall_counters("runs")
    assert runs.pop("7") == 3  # once in its chunk, then twice alone
    assert set(runs.values()) == {1}
    assert store.get_counter("batch_calls") == 3 + 2  # 3 chunks of <=10, 2 retries alone
    (entry,) = sync_mode.list()
    assert entry["payload"] == {"id": 7, "poison": True}
    assert entry["attempts"] == 3
    stats = AsyncTaskQueue().get_stats()
    assert stats["completed"] == 24 and stats["failed"] == 1
    assert stats["batches_processed"] == 3 and stats["submitted"] == 25


def test_sync_submit_batch_item_recovers_on_retry(sync_mode: DeadLetterQueue) -> None:
    """An item failing only in its chunk is retried alone and counted once as completed."""
    from sluice.workers import tasks

    calls = {"n": 0}

    class Flaky(TaskHandler):
        batch_size = 4
        backoff = 0.01

        @property
        def task_name(self) -> str:
            return "t_flaky_unit"

        def supports_batch(self) -> bool:
            return True

        def execute_batch(self, payloads: list[dict[str, object]]) -> list[object]:
            calls["n"] += 1
            if calls["n"] == 1:
                return [RuntimeError("first") if p["id"] == 1 else p for p in payloads]
            return list(payloads)

    AsyncTaskQueue().register_handler(Flaky())
    assert tasks.registry.get("t_flaky_unit")
    results = submit_batch("t_flaky_unit", [{"id": i} for i in range(4)]).get(timeout=5)
    assert results == [{"id": i} for i in range(4)]
    assert AsyncTaskQueue().get_stats()["completed"] == 4
    assert sync_mode.count() == 0


def test_sync_mode_waits_for_the_rate_limit_inline(sync_mode: DeadLetterQueue) -> None:
    define_rate_limit("t", rate=20, burst=2)
    started = time.monotonic()
    for i in range(6):
        assert submit_task("t_limited", {"id": i}).successful()
    assert time.monotonic() - started >= 0.15  # 4 tokens beyond the burst at 20/s
    stats = AsyncTaskQueue().get_stats()
    assert stats["rate_limited"] >= 1 and stats["retries"] == 0


# -- rate limiter ------------------------------------------------------------------------------


def test_rate_limiter_on_disk_store_bursts_then_refuses(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "store", prefix="rl:")
    limiter = RateLimiter(rate=2, burst=3, name=f"unit-{uuid.uuid4().hex[:6]}", store=store)

    async def scenario() -> list[bool]:
        return [await limiter.acquire() for _ in range(4)]

    started = time.monotonic()
    assert asyncio.run(scenario()) == [True, True, True, False]
    assert time.monotonic() - started < 0.5  # acquire never sleeps
    assert 0 < limiter.wait_time() <= 0.5 + 1e-6
    assert not limiter.try_acquire()
    time.sleep(limiter.wait_time() + 0.05)
    assert limiter.try_acquire()
    # a second limiter object with the same name shares the bucket
    twin = RateLimiter(rate=2, burst=3, name=limiter.name, store=store)
    assert not twin.try_acquire()
    store.close()


def test_rate_limiter_guide_example(data_dir: Path) -> None:
    limiter = RateLimiter(rate=100, burst=200)

    async def process_with_limit() -> bool:
        if await limiter.acquire():
            return True
        await asyncio.sleep(0.01)
        return False

    assert asyncio.run(process_with_limit()) is True


def test_rate_limiter_validation() -> None:
    with pytest.raises(InvalidInput):
        RateLimiter(rate=0)
    with pytest.raises(InvalidInput):
        RateLimiter(rate=1, burst=0.5)


def test_named_limits_from_env_and_code(data_dir: Path) -> None:
    with settings_env(SLUICE_RATE_LIMITS="envlim=2:4, other=3"):
        define_rate_limit("code", 1)  # defining one in code must not hide the variable's
        assert get_rate_limit("envlim").burst == 4
        assert get_rate_limit("other").rate == 3 and get_rate_limit("other").burst == 3
        assert get_rate_limit("code").rate == 1
        with pytest.raises(ConfigurationError, match="not defined"):
            get_rate_limit("missing")
    with (
        settings_env(SLUICE_RATE_LIMITS="broken=abc"),
        pytest.raises(ConfigurationError, match="name=RATE:BURST"),
    ):
        get_rate_limit("broken")


# -- dead letters ------------------------------------------------------------------------------


def test_dead_letter_queue_add_list_get_purge_prune(sync_mode: DeadLetterQueue) -> None:
    from sluice.db import DeadLetterTask, session_scope

    ids = [
        sync_mode.add(
            task_id=f"id-{i}",
            task_name="t_poison" if i % 2 else "t_record",
            payload={"id": i, "text": "é"},
            error="RuntimeError: boom",
            attempts=4,
            history=[{"attempt": 1}],
        )
        for i in range(5)
    ]
    assert [e["id"] for e in sync_mode.list()] == ids[::-1]
    assert [e["id"] for e in sync_mode.list(limit=2)] == ids[:2:-1]
    assert {e["payload"]["id"] for e in sync_mode.list(task_name="t_poison")} == {1, 3}
    entry = sync_mode.get(ids[2])
    assert entry["payload"] == {"id": 2, "text": "é"} and entry["history"] == [{"attempt": 1}]
    with pytest.raises(InvalidInput, match="no dead-letter entry"):
        sync_mode.get(999_999)
    with pytest.raises(InvalidInput, match="no dead-letter entry"):
        sync_mode.replay(999_999)
    with pytest.raises(InvalidInput):
        sync_mode.list(limit=0)

    assert sync_mode.purge([ids[0]]) == 1
    with session_scope() as db:
        db.execute(
            update(DeadLetterTask)
            .where(DeadLetterTask.id.in_(ids[1:3]))
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )
    with pytest.raises(InvalidInput):
        sync_mode.prune(0)
    assert sync_mode.prune(30) == 2
    assert sync_mode.count() == 2

    from sluice.workers.tasks import prune_dead_letters

    assert prune_dead_letters.apply(kwargs={"older_than_days": 30}).get() == 0
    assert sync_mode.purge() == 2 and sync_mode.count() == 0


# -- the guide's example -----------------------------------------------------------------------

GUIDE_SCRIPT = """
import asyncio
from typing import Any, Dict, List

from sluice.workers import AsyncTaskQueue, TaskHandler, Priority, RateLimiter, DeadLetterQueue


class _EmbeddingAPI:
    async def batch_embed(self, texts):
        return [[float(len(t)), float(t[-1])] for t in texts]


embedding_api = _EmbeddingAPI()


class EmbeddingHandler(TaskHandler):
    @property
    def task_name(self) -> str:
        return "embedding"

    def supports_batch(self) -> bool:
        return True  # Enable batching

    async def execute_batch(self, payloads: List[Dict]) -> List[Any]:
        # Process all embeddings in single API call
        texts = [p["text"] for p in payloads]
        embeddings = await embedding_api.batch_embed(texts)
        return [{"embedding": e} for e in embeddings]


async def main():
    # Usage
    queue = AsyncTaskQueue()
    queue.register_handler(EmbeddingHandler())
    await queue.start(num_workers=4)

    # Submit batch
    results = await queue.submit_batch("embedding", [
        {"text": "code snippet 1"},
        {"text": "code snippet 2"},
        {"text": "code snippet 3"},
    ])
    for result in results:
        print("RESULT", result)

    stats = queue.get_stats()
    print("STATS", stats["submitted"], stats["completed"], stats["batches_processed"])
    await queue.stop()


asyncio.run(main())
"""


def test_guide_queue_example_runs_as_one_script(tmp_path: Path) -> None:
    script = tmp_path / "guide_example.py"
    script.write_text(textwrap.dedent(GUIDE_SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [
        "RESULT {'embedding': [14.0, 1.0]}",
        "RESULT {'embedding': [14.0, 2.0]}",
        "RESULT {'embedding': [14.0, 3.0]}",
    ]
    assert "STATS 3 3 1" in done.stdout
