"""``sluice analyze`` end to end, as a user runs it: embedded, inline, and distributed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.analysis import WalkReport, walk_tree
from sluice.analysis.sources import source_ref
from sluice.store import RedisStore
from tests.conftest import EXAMPLES, WorkerProcess, run_sluice, service_env

FINDINGS_SQL = sa.text(
    "SELECT file_path, line, rule, severity FROM code_review_results "
    "WHERE session_id = (SELECT max(id) FROM analysis_sessions) ORDER BY 1, 2, 3"
)


def _stored_findings(database_url: str) -> list[tuple[str, int, str, str]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(FINDINGS_SQL)]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """One embedded run of the README's main job, shared by the tests that inspect it."""
    tmp = tmp_path_factory.mktemp("embedded")
    result = run_sluice("analyze", str(EXAMPLES), env=service_env(tmp))
    return result, tmp / "data"


def test_embedded_run_prints_findings_through_a_real_worker(embedded_run: tuple) -> None:
    result, data_dir = embedded_run
    assert result.returncode == 0, result.stderr
    assert "embedded worker x2" in result.stdout
    assert "security.eval" in result.stdout
    assert "findings total" in result.stdout
    # The worker consumed the messages from the filesystem broker and logged each task.
    log = (data_dir / "logs" / "embedded-worker.log").read_text()
    # Files travel in chunks (several per task with the local provider), as run_batch tasks.
    assert "sluice.run_batch" in log and "succeeded" in log and "'findings':" in log
    # Nothing stray for a user to wonder about (kombu warned of the embedded broker's missing host
    # on every pooled connection, in the command and the worker alike).
    assert "WARNING" not in result.stderr, result.stderr
    assert "No hostname was supplied" not in log
    stored = _stored_findings(f"sqlite:///{data_dir / 'sluice.db'}")
    assert stored, "findings must be stored in code_review_results"
    assert not any(path.startswith("app/build/") for path, *_ in stored), ".gitignore honoured"


def test_inline_mode_stores_the_same_findings(embedded_run: tuple, tmp_path: Path) -> None:
    _, embedded_data = embedded_run
    env = service_env(tmp_path, ASYNC_PROCESSING_ENABLED="false")
    result = run_sluice("analyze", str(EXAMPLES), env=env)
    assert result.returncode == 0, result.stderr
    assert "inline (ASYNC_PROCESSING_ENABLED=false)" in result.stdout
    assert not (tmp_path / "data" / "logs" / "embedded-worker.log").exists()
    inline = _stored_findings(f"sqlite:///{tmp_path / 'data' / 'sluice.db'}")
    assert inline == _stored_findings(f"sqlite:///{embedded_data / 'sluice.db'}")


@pytest.mark.parametrize(
    "args,extra_env,expected,code",
    [
        (["analyze", "does/not/exist"], {}, "Error: path 'does/not/exist' does not exist", 2),
        (
            ["analyze", "examples"],
            {"SLUICE_WORKER_CONCURRENCY": "lots"},
            "SLUICE_WORKER_CONCURRENCY",
            1,
        ),
        (
            ["analyze", "examples"],
            {"SLUICE_BROKER_URL": "redis//x"},
            "SLUICE_BROKER_URL='redis//x'",
            1,
        ),
        (["db", "upgrade", "nope"], {}, "unknown revision 'nope'", 2),
    ],
)
def test_bad_input_gives_one_clear_line_and_no_traceback(
    tmp_path: Path, args: list[str], extra_env: dict[str, str], expected: str, code: int
) -> None:
    result = run_sluice(*args, env=service_env(tmp_path, **extra_env), timeout=60)
    assert result.returncode == code
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def distributed_env(
    tmp_path: Path, redis_broker_url: str, redis_url: str, pg_schema: str
) -> dict[str, str]:
    """Redis broker and results, RedisStore, PostgreSQL migrated to head."""
    env = service_env(
        tmp_path,
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
        SLUICE_REDIS_URL=redis_url,
        SLUICE_DATABASE_URL=pg_schema,
    )
    migrate = run_sluice("db", "upgrade", env=env)
    assert migrate.returncode == 0, migrate.stderr
    return env


#: A ``sitecustomize`` part that records each task the command publishes (its name and arguments)
#: in ``published.jsonl`` beside itself.
RECORD_PUBLISHED = """
import json, os
from celery.signals import before_task_publish

@before_task_publish.connect
def _record(sender=None, body=None, **kwargs):
    path = os.path.join(os.path.dirname(__file__), "published.jsonl")
    with open(path, "a") as out:
        out.write(json.dumps([sender, body[0]]) + "\\n")
"""

#: A ``sitecustomize`` that makes the database drivers unimportable in the process it starts in,
#: and the AI providers and the disk store too: the workers run them, the command never does.
NO_DATABASE_LAYER = """
import sys

WORKER_ONLY = ("sluice.ai.local", "sluice.ai.openai", "sluice.ai.providers", "sluice.store.disk")

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("sqlalchemy", "psycopg", "alembic", "diskcache"):
            raise ImportError(f"{name} is not installed on this CI runner (test)")
        if name in WORKER_ONLY:
            raise ImportError(f"{name} is loaded by the command (test)")

sys.meta_path.insert(0, _Refuse())
"""


def test_distributed_run_matches_embedded_findings(
    embedded_run: tuple, tmp_path: Path, distributed_env: dict[str, str], pg_schema: str
) -> None:
    """Redis broker + RedisStore + PostgreSQL, with a separately started worker process. The
    command itself needs only the broker: it runs where the database drivers cannot even be
    imported and the database URL leads nowhere (a CI runner with broker access alone), and the
    workers open and close its session."""
    _, embedded_data = embedded_run
    env = distributed_env
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_DATABASE_LAYER + RECORD_PUBLISHED)
    client_env = {
        **env,
        "PYTHONPATH": str(site),
        "SLUICE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        result = run_sluice("analyze", str(EXAMPLES), "--format", "json", env=client_env)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stderr
    review = json.loads(result.stdout)
    assert review["run"]["mode"] == "external workers" and review["status"] == "completed"
    log = (tmp_path / "worker.log").read_text()
    assert "sluice.run_batch" in log and "sluice.handlers.analysis_session" in log
    distributed = _stored_findings(pg_schema)
    assert distributed == _stored_findings(f"sqlite:///{embedded_data / 'sluice.db'}")
    reported = sorted((f["path"], f["line"], f["rule"], f["severity"]) for f in review["findings"])
    assert reported == sorted(distributed)
    with sa.create_engine(pg_schema).connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM analysis_sessions")).scalars().all() == [
            "completed"
        ]
    # The chunks carried claim checks, not the files' text; the texts went through the store.
    published = [json.loads(line) for line in (site / "published.jsonl").read_text().splitlines()]
    items = [i for name, args in published if name == "sluice.run_batch" for _, i in args[1]]
    texts = {source.path: source.content for source in walk_tree(EXAMPLES, 10**6, WalkReport())}
    assert sorted(item["path"] for item in items) == sorted(texts)
    assert all("content" not in item for item in items)
    assert {item["content_ref"] for item in items} == {source_ref(t) for t in texts.values()}
    store = RedisStore(env["SLUICE_REDIS_URL"], prefix=env.get("SLUICE_KEY_PREFIX", "sluice:"))
    stored = store.get_many_encoded(["src:" + item["content_ref"] for item in items])
    assert len(stored) == len(set(texts.values()))


def test_distributed_run_without_workers_fails_clearly(
    tmp_path: Path, redis_broker_url: str, pg_schema: str
) -> None:
    env = service_env(
        tmp_path,
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
        SLUICE_DATABASE_URL=pg_schema,
    )
    result = run_sluice("analyze", str(EXAMPLES), env=env, timeout=60)
    assert result.returncode == 1
    assert "no Celery worker answered" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_option_on_redis_runs_its_own_worker_cleanly(
    embedded_run: tuple, tmp_path: Path, distributed_env: dict[str, str], pg_schema: str
) -> None:
    """``--workers N`` with a real broker: the command starts and stops its own worker, whose pool
    children warm up against the Redis result backend without an error."""
    _, embedded_data = embedded_run
    result = run_sluice("analyze", str(EXAMPLES), "--workers", "1", env=distributed_env)
    assert result.returncode == 0, result.stderr
    assert "embedded worker x1" in result.stdout
    log = (tmp_path / "data" / "logs" / "embedded-worker.log").read_text()
    assert "sluice.run_batch" in log
    assert "Traceback" not in log and " raised:" not in log, log[-3000:]
    assert _stored_findings(pg_schema) == _stored_findings(
        f"sqlite:///{embedded_data / 'sluice.db'}"
    )
