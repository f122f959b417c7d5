"""Several files per ``analysis`` task, on Redis + PostgreSQL with a real ``celery -A sluice worker``.

A chunk stores the same findings as one task per file, a file failing inside a chunk is retried and
dead-lettered alone (the other files of its chunk are stored once), and a chunk delivered twice
rewrites its files' rows instead of duplicating them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sluice.analysis.sources import stash_sources
from sluice.db import (
    AnalysisSession,
    AnalyzedFile,
    CodeReviewResult,
    FileEmbedding,
    session_scope,
)
from sluice.errors import TaskFailed
from sluice.store import get_store
from sluice.workers import ChunkedBatch, DeadLetterQueue, submit_chunks, submit_task
from sluice.workers.results import value_of, wait_ready
from tests.conftest import ROOT, WorkerProcess, run_sluice, service_env
from tests.worker_fixtures import settings_env

pytestmark = pytest.mark.integration

#: Files with findings of several rules and severities (one has none).
SOURCES = sorted(p for p in (ROOT / "examples").rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture
def worker(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> Iterator[WorkerProcess]:
    settings = {
        "SLUICE_BROKER_URL": redis_broker_url,
        "SLUICE_RESULT_BACKEND": redis_broker_url,
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_KEY_PREFIX": key_prefix,
        "SLUICE_DATABASE_URL": pg_schema,
        "SLUICE_MAX_COUNTDOWN": "1",  # retries back off for at most a second
    }
    env = service_env(tmp_path, **settings)
    upgraded = run_sluice("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    process = WorkerProcess(env, tmp_path / "worker.log", concurrency=2)
    try:
        process.wait_ready()
        with settings_env(reconfigure_celery=True, **settings):
            yield process
    finally:
        process.stop()


def _session() -> int:
    with session_scope() as db:
        row = AnalysisSession(status="running", root_path="/t", provider="local", model="m")
        db.add(row)
        db.flush()
        return row.id


def _payloads(session_id: int) -> list[dict[str, Any]]:
    return [
        {
            "session_id": session_id,
            "path": str(path.relative_to(ROOT)),
            "content": path.read_text(),
            "language": "python",
            "rules": None,
        }
        for path in SOURCES
    ]


def _rows(session_id: int) -> list[tuple[str, int, int, str, str, str]]:
    with session_scope() as db:
        rows = db.scalars(
            select(CodeReviewResult).where(CodeReviewResult.session_id == session_id)
        ).all()
        return sorted((r.file_path, r.line, r.column, r.rule, r.severity, r.message) for r in rows)


def _files(session_id: int) -> Counter[str]:
    with session_scope() as db:
        paths = db.scalars(select(AnalyzedFile.path).where(AnalyzedFile.session_id == session_id))
        return Counter(paths)


def _drain(batch: ChunkedBatch) -> dict[int, Any]:
    """Every item's value, polled as a caller does (bounded: a stuck chunk fails the test)."""
    values: dict[int, Any] = {}
    for _ in range(3000):
        values.update(batch.poll())
        if not batch.pending:
            return values
        time.sleep(0.02)
    raise AssertionError(f"chunks still pending: {batch.pending}")


@pytest.mark.parametrize("budget", [1.0, 20_000.0, None], ids=["file-per-task", "by-size", "one"])
def test_chunks_store_the_same_findings_as_one_task_per_file(
    worker: WorkerProcess, budget: float | None
) -> None:
    payloads = _payloads(_session())
    single = _session()
    per_file = [submit_task("analysis", {**p, "session_id": single}) for p in payloads]
    wait_ready(per_file, 60, "per-file analyses")
    assert all(r.successful() for r in per_file), [value_of(r) for r in per_file]

    chunked = payloads[0]["session_id"]
    batch = submit_chunks(
        "analysis", payloads, weights=[len(p["content"]) for p in payloads], budget=budget
    )
    values = _drain(batch)

    assert sorted(values) == list(range(len(payloads)))
    assert [values[i]["path"] for i in range(len(payloads))] == [p["path"] for p in payloads]
    expected = [row[1:] for row in _rows(single)]
    assert expected, "the example files must have findings"
    assert [row[1:] for row in _rows(chunked)] == expected
    assert _files(chunked) == Counter(p["path"] for p in payloads)


@pytest.mark.parametrize("sent", ["texts", "claim checks"])
def test_a_file_failing_in_a_chunk_is_retried_and_dead_lettered_alone(
    worker: WorkerProcess, sent: str
) -> None:
    """Sent as claim checks (``sluice analyze`` on Redis), the dead letter keeps the text itself:
    it outlives the claim-checked copy by weeks."""
    payloads = _payloads(_session())
    bad = {**payloads[1], "session_id": 0, "path": "bad.py"}  # fails validation in its slot
    items = [payloads[0], bad, *payloads[1:]]
    if sent == "claim checks":
        refs = stash_sources(get_store(), [item["content"] for item in items])
        items = [
            {**{k: v for k, v in item.items() if k != "content"}, "content_ref": ref}
            for item, ref in zip(items, refs, strict=True)
        ]
    batch = submit_chunks("analysis", items)  # one chunk holds them all
    values = _drain(batch)

    assert isinstance(values[1], TaskFailed) and "dead-letter entry" in str(values[1])
    assert all(isinstance(values[i], dict) for i in range(len(items)) if i != 1)
    session_id = payloads[0]["session_id"]
    assert _files(session_id) == Counter(p["path"] for p in payloads)  # each stored once
    (entry,) = DeadLetterQueue().list()
    assert entry["task_name"] == "analysis"
    assert entry["payload"] == bad  # with its text, either way
    assert entry["attempts"] == 6  # its try in the chunk, then 5 retries alone
    assert "session_id must be a positive integer" in entry["error"]


def test_a_chunk_delivered_twice_rewrites_its_rows(worker: WorkerProcess) -> None:
    once, twice = _session(), _session()
    payloads = _payloads(once)
    _drain(submit_chunks("analysis", payloads))
    again = [{**p, "session_id": twice} for p in payloads]
    for _ in range(2):  # the same chunk twice: what a redelivery after a lost ack does
        _drain(submit_chunks("analysis", again))

    assert _files(twice) == Counter(p["path"] for p in payloads)
    assert [row[1:] for row in _rows(twice)] == [row[1:] for row in _rows(once)]


def _embeddings(session_id: int) -> Counter[str]:
    with session_scope() as db:
        rows = db.scalars(select(FileEmbedding).where(FileEmbedding.session_id == session_id))
        return Counter(f"{row.path}:{len(row.vector)}" for row in rows)


def test_an_embedding_chunk_delivered_twice_rewrites_only_its_files_rows(
    worker: WorkerProcess,
) -> None:
    """One chunk holds files of two sessions; delivered twice, each file keeps one row, and the
    same paths stored for a third session are untouched."""
    first, second, other = _session(), _session(), _session()
    items = [
        {"session_id": session_id, "path": p["path"], "text": p["content"]}
        for session_id in (first, second)
        for p in _payloads(session_id)
    ]
    _drain(submit_chunks("embedding", [{**i, "session_id": other} for i in items[:2]]))
    before = _embeddings(other)
    for _ in range(2):
        values = _drain(submit_chunks("embedding", items))
        assert all(isinstance(v, dict) and v["dimensions"] > 0 for v in values.values()), values

    expected = Counter(f"{p['path']}:{values[0]['dimensions']}" for p in _payloads(first))
    assert _embeddings(first) == expected
    assert _embeddings(second) == expected
    assert _embeddings(other) == before and sum(before.values()) == 2


def test_a_results_bulk_arguments_are_not_stored_with_it(worker: WorkerProcess) -> None:
    """Extended results keep name, worker and queue; a file's 40 KB of source stays out."""
    payload = {**_payloads(_session())[0], "content": "x = 1\n" * 8000}
    small, big = submit_task("security_alert", {"path": "a.py"}), submit_task("analysis", payload)
    wait_ready([small, big], 60, "both tasks")

    assert big.successful() and big.name == "sluice.handlers.analysis" and big.args is None
    assert big.worker and big.queue
    assert small.args == [{"path": "a.py"}]
