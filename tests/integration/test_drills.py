"""Fault drills: the main job under a killed worker, a restarted Redis, a database outage, and a
burst of 10,000 submissions. Each drill prints what it injected and what it counted; lost must be 0.

The provider is the OpenAI-compatible one against a loopback fake with a fixed latency, so files take
long enough for a fault to land in the middle of the run (the hosted model cannot run here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import ROOT, Broker, require_service, service_env, stop_processes
from tests.fake_openai import KEY, running_fake_openai
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.drill]
FILES = 160
PG_BIN = Path("/usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tree(root: Path, files: int = FILES) -> Path:
    """A source tree whose files all differ (so no cache hit hides a lost task)."""
    for i in range(files):
        package = root / f"pkg{i % 8}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"mod{i}.py").write_text(
            f'"""Module {i}."""\n\nimport subprocess\n\n\ndef run_{i}(cmd):\n'
            f"    return subprocess.call(cmd, shell=True)  # {i}\n"
        )
    return root


def _worker(
    env: dict[str, str], log: Path, queues: str = "critical,high,normal,low,batch"
) -> subprocess.Popen[bytes]:
    """A worker in its own process group, so a drill can SIGKILL it with all its pool children."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-Q", queues, "-c", "2",
         "--prefetch-multiplier", "1", "-n", f"drill-{log.stem}@%h", "-l", "INFO", "-f", str(log)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _prefix() -> str:
    """A store prefix of this run alone: an interrupted run's keys must never be counted."""
    return f"drill-{uuid.uuid4().hex[:12]}:"


def _ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text()


def _analyze(env: dict[str, str], tree: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "analyze", str(tree), "--workers", "0", "--max-findings", "0"],
        env={**env, "COLUMNS": "200"}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _counts(database_url: str) -> tuple[int, int, int]:
    """(analysed rows, distinct analysed paths, dead letters) of the newest session."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("analyzed_files"):
                return 0, 0, 0
            session = conn.execute(sa.text("SELECT max(id) FROM analysis_sessions")).scalar()
            rows, distinct = conn.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT path) FROM analyzed_files WHERE session_id = :s"
                ),
                {"s": session},
            ).one()
            dead = conn.execute(sa.text("SELECT count(*) FROM dead_letter_tasks")).scalar()
            return int(rows), int(distinct), int(dead or 0)
    except sa.exc.OperationalError:
        return -1, -1, -1  # the database is the thing that is down right now
    finally:
        engine.dispose()


def _announce(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print past pytest's capture: a drill's counts belong in every CI log."""
    with capsys.disabled():
        print(f"\n{line}")


def _report(
    capsys: pytest.CaptureFixture[str], drill: str, injected: str, database_url: str
) -> tuple[int, int, int]:
    rows, distinct, dead = _counts(database_url)
    lost = FILES - distinct - dead
    _announce(
        capsys,
        f"drill {drill}: injected {injected}; submitted {FILES}, completed {distinct} "
        f"(rows {rows}), dead-lettered {dead}, lost {lost}",
    )
    return rows, distinct, dead


@pytest.fixture
def fake_llm() -> Iterator[str]:
    with running_fake_openai(latency=0.08) as fake:
        yield fake.url


def _drill_env(tmp_path: Path, fake_url: str, **extra: str) -> dict[str, str]:
    """The drill's settings; ``extra`` adds to and overrides them."""
    settings = {
        "SLUICE_AI_PROVIDER": "openai",
        "SLUICE_AI_BASE_URL": fake_url,
        "SLUICE_AI_API_KEY": KEY,
        "SLUICE_AI_MODEL": "gpt-4o-mini",
        # A killed worker's unacknowledged messages come back after 10 s, not 4 h.
        "SLUICE_VISIBILITY_TIMEOUT": "10",
        "SLUICE_MAX_COUNTDOWN": "5",
        # A killed worker's cache fill locks lapse after 5 s, not 30 s: the redelivered file waits
        # that long for them on Redis, which cannot tell a dead holder (renewal keeps a live one).
        "SLUICE_CACHE_LOCK_LEASE": "5",
    }
    return service_env(tmp_path, **{**settings, **extra})


def _migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_sigkill_of_a_worker_mid_run_loses_nothing(
    tmp_path: Path,
    fake_llm: str,
    broker: Broker,
    redis_url: str,
    pg_schema: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = _drill_env(
        tmp_path, fake_llm, SLUICE_BROKER_URL=broker.url, SLUICE_RESULT_BACKEND=broker.result_backend,
        SLUICE_REDIS_URL=redis_url, SLUICE_DATABASE_URL=pg_schema,
        SLUICE_KEY_PREFIX=_prefix(),
    )  # fmt: skip
    _migrate(env)
    tree = _tree(tmp_path / "tree")
    victim = _worker(env, tmp_path / "victim.log")
    survivor = _worker(env, tmp_path / "survivor.log")
    try:
        wait_for(
            lambda: _ready(tmp_path / "victim.log") and _ready(tmp_path / "survivor.log"),
            60,
            "workers",
        )
        run = _analyze(env, tree)
        wait_for(lambda: _counts(pg_schema)[1] >= FILES // 4, 120, "a quarter of the files")
        os.killpg(victim.pid, signal.SIGKILL)
        injected = f"SIGKILL of worker group {victim.pid} at {_counts(pg_schema)[1]}/{FILES} files"
        out, err = run.communicate(timeout=240)
    finally:
        stop_processes(survivor, victim, whole_group=True)
    assert run.returncode == 0, out[-2000:] + err[-2000:]
    rows, distinct, dead = _report(capsys, f"sigkill[{broker.kind}]", injected, pg_schema)
    assert (rows, distinct, dead) == (
        FILES,
        FILES,
        0,
    )  # each file once: redelivery rewrote, never added


@contextmanager
def _private_redis(directory: Path, port: int) -> Iterator[list[str]]:
    if shutil.which("redis-server") is None:
        require_service("redis-server binary", "redis://127.0.0.1:1")
    command = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, "private redis")
    try:
        yield command
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@dataclass
class RestartableBroker:
    """A broker a drill may stop and start again: its settings and how to restart it."""

    kind: str
    settings: dict[str, str]
    restart: Callable[[], str]  # stops, waits 3 s, starts; returns what it did


@contextmanager
def _restartable_broker(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RestartableBroker]:
    """Redis: a private server with an append-only file. RabbitMQ: ``rabbitmqctl stop_app``."""
    if kind == "amqp":
        if shutil.which("rabbitmqctl") is None:
            require_service(
                "rabbitmqctl (the broker-restart drill stops the app)", "amqp://127.0.0.1:1"
            )
        url = request.getfixturevalue("amqp_broker_url")
        results = request.getfixturevalue("redis_broker_url")
        host = urlsplit(url)

        def restart_rabbitmq() -> str:
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
            time.sleep(3)
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
            wait_for(
                lambda: _accepts(host.hostname or "127.0.0.1", host.port or 5672),
                60,
                "rabbitmq back",
            )
            return "RabbitMQ stop_app + start_app (3 s down)"

        settings = {"SLUICE_BROKER_URL": url, "SLUICE_RESULT_BACKEND": results,
                    "SLUICE_REDIS_URL": request.getfixturevalue("redis_url"),
                    "SLUICE_KEY_PREFIX": _prefix()}  # fmt: skip
        try:
            yield RestartableBroker(kind, settings, restart_rabbitmq)
        finally:
            # Never leave the shared broker stopped, whatever failed.
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True)
        return
    port = _free_port()
    (tmp_path / "redis").mkdir()
    restarted: list[subprocess.Popen[bytes]] = []
    with _private_redis(tmp_path / "redis", port) as command:

        def restart_redis() -> str:
            # SHUTDOWN writes the append-only file; the same command brings the same data back.
            subprocess.run(["redis-cli", "-p", str(port), "shutdown"], capture_output=True)
            time.sleep(3)
            restarted.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            wait_for(lambda: _pings(redis.Redis(port=port)), 20, "redis back")
            return "Redis shutdown + restart (3 s down)"

        broker = f"redis://127.0.0.1:{port}/0"
        settings = {
            "SLUICE_BROKER_URL": broker,
            "SLUICE_RESULT_BACKEND": broker,
            "SLUICE_REDIS_URL": f"redis://127.0.0.1:{port}/1",
        }
        yield RestartableBroker(kind, settings, restart_redis)
    for process in restarted:
        process.wait(10)  # the context's shutdown stopped the restarted server too


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["redis", "amqp"])
def test_broker_restart_mid_run_loses_nothing(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fake_llm: str,
    pg_schema: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _restartable_broker(kind, tmp_path, request) as broker:
        env = _drill_env(tmp_path, fake_llm, SLUICE_DATABASE_URL=pg_schema, **broker.settings)
        _migrate(env)
        tree = _tree(tmp_path / "tree")
        workers = [_worker(env, tmp_path / f"w{i}.log") for i in range(2)]
        try:
            wait_for(lambda: all(_ready(tmp_path / f"w{i}.log") for i in range(2)), 60, "workers")
            run = _analyze(env, tree)
            wait_for(lambda: _counts(pg_schema)[1] >= FILES // 4, 120, "a quarter of the files")
            at = _counts(pg_schema)[1]
            injected = f"{broker.restart()} at {at}/{FILES} files"
            out, err = run.communicate(timeout=300)
        finally:
            stop_processes(*workers, whole_group=True)
        assert run.returncode == 0, out[-2000:] + err[-2000:]
        rows, distinct, dead = _report(capsys, f"broker-restart[{kind}]", injected, pg_schema)
        assert distinct + dead == FILES and rows == distinct  # lost = 0, no duplicates


@contextmanager
def _private_postgres(directory: Path, port: int) -> Iterator[tuple[str, list[str], list[str]]]:
    versions = sorted(PG_BIN.glob("*/bin/initdb")) if PG_BIN.exists() else []
    if not versions:
        require_service("PostgreSQL server binaries", "postgresql://127.0.0.1:1")
    bin_dir = versions[-1].parent
    directory.mkdir(parents=True)
    shutil.chown(directory, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(directory / "data"),
        "-A",
        "trust",
        "-U",
        "postgres",
    ]
    subprocess.run([*as_postgres, *initdb], check=True, capture_output=True)
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    start = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-o", options,
             "-l", str(directory / "pg.log"), "-w", "start"]  # fmt: skip
    stop = [
        *as_postgres,
        str(bin_dir / "pg_ctl"),
        "-D",
        str(directory / "data"),
        "-m",
        "fast",
        "-w",
        "stop",
    ]
    subprocess.run(start, check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", start, stop
    finally:
        subprocess.run(stop, capture_output=True)


def test_database_outage_mid_run_loses_nothing(
    fake_llm: str, redis_broker_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Outside pytest's tmp_path: the postgres user must reach the cluster's folder.
    base = Path(tempfile.mkdtemp(prefix="sluice-drill-pg-"))
    base.chmod(0o755)
    try:
        with _private_postgres(base / "pg", _free_port()) as (database_url, start, stop):
            env = _drill_env(
                base, fake_llm, SLUICE_BROKER_URL=redis_broker_url, SLUICE_RESULT_BACKEND=redis_broker_url,
                SLUICE_REDIS_URL=redis_url, SLUICE_DATABASE_URL=database_url,
                SLUICE_KEY_PREFIX=f"drill-{base.name}:",
            )  # fmt: skip
            _migrate(env)
            tree = _tree(base / "tree")
            workers = [_worker(env, base / f"w{i}.log") for i in range(2)]
            try:
                wait_for(lambda: all(_ready(base / f"w{i}.log") for i in range(2)), 60, "workers")
                run = _analyze(env, tree)
                wait_for(
                    lambda: _counts(database_url)[1] >= FILES // 4, 120, "a quarter of the files"
                )
                at = _counts(database_url)[1]
                subprocess.run(stop, check=True, capture_output=True)
                time.sleep(5)
                subprocess.run(start, check=True, capture_output=True)
                injected = f"PostgreSQL stopped for 5 s at {at}/{FILES} files"
                out, err = run.communicate(timeout=300)
            finally:
                stop_processes(*workers, whole_group=True)
            assert run.returncode in (0, 1), out[-2000:] + err[-2000:]
            rows, distinct, dead = _report(capsys, "postgres-outage", injected, database_url)
            assert (
                distinct + dead == FILES and rows == distinct
            )  # retried or dead-lettered, never lost
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_burst_of_10000_keeps_critical_ahead(
    tmp_path: Path, broker: Broker, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """10,000 queued LOW/NORMAL/HIGH tasks; the broker hands each CRITICAL submitted into the
    backlog out next.

    Asserted on what the worker that received a CRITICAL had received from the broker since it
    was published (Celery's ``task_received``, in that worker's main process, which takes one
    message after another): at most what its prefetch window already held. Neither the start
    order nor the receipt order across workers is asserted, only reported: while one worker holds
    the CRITICAL (its pool child, or its main process before the signal, not yet scheduled), the
    other goes on taking and starting tasks, as many as the OS scheduler allows: 10 starts were
    seen once on an otherwise idle machine, and 8 receipts once in CI.
    """
    from sluice.store import RedisStore
    from sluice.workers import Priority, submit_task
    from tests.worker_fixtures import settings_env
    from tests.worker_handlers import RECORD_RECEIPTS

    prefix = _prefix()
    env = service_env(
        tmp_path, SLUICE_BROKER_URL=broker.url, SLUICE_RESULT_BACKEND=broker.result_backend,
        SLUICE_REDIS_URL=redis_url, SLUICE_KEY_PREFIX=prefix, SLUICE_HANDLER_MODULES="tests.worker_handlers",
        **{RECORD_RECEIPTS: "1"},
    )  # fmt: skip
    store = RedisStore(redis_url, prefix=prefix)
    workers = [_worker(env, tmp_path / f"w{i}.log", "critical,high,normal,low") for i in range(2)]
    slots = 2 * 2  # processes x concurrency, prefetch 1
    started_at: dict[str, int] = {}
    received_at: dict[str, int] = {}
    try:
        wait_for(lambda: all(_ready(tmp_path / f"w{i}.log") for i in range(2)), 60, "workers")
        with settings_env(
            reconfigure_celery=True, **{k: v for k, v in env.items() if k.startswith("SLUICE_")}
        ):
            import tests.worker_handlers  # noqa: F401 - registers t_record here too

            levels = [Priority.LOW, Priority.NORMAL, Priority.HIGH]
            for i in range(10_000):
                submit_task("t_record", {"id": i, "label": "bulk"}, levels[i % 3])
                if i % 1000 == 999:
                    submit_task("t_record", {"id": f"c{i}", "label": f"critical:c{i}"}, "CRITICAL")
                    # Counted from when the broker has it: tasks received or started while the
                    # publish was in transit did not overtake it.
                    received_at[f"c{i}"] = store.get_counter("received")
                    started_at[f"c{i}"] = store.get_counter("seq")
            wait_for(lambda: store.get_counter("seq") >= 10_010, 600, "all 10,010 tasks")
    finally:
        stop_processes(*workers, whole_group=True)
    order = store.hgetall_counters("order")
    started = _overtaken(order, started_at)
    receipts = store.hgetall_counters("received_order")
    received = _overtaken(receipts, received_at)
    by_its_worker = _received_by_its_worker(receipts, received_at)
    store.clear_namespace()
    store.close()
    _announce(
        capsys,
        f"drill burst[{broker.kind}]: injected 10,000 LOW/NORMAL/HIGH + 10 CRITICAL submissions; "
        f"completed {len(order)}, lost {10_010 - len(order)}; tasks the broker handed out between "
        f"a CRITICAL's submission and its receipt: {received} (by the worker that received it: "
        f"{by_its_worker}); tasks started between its submission and its start: {started}",
    )
    assert len(order) == 10_010
    assert len(received) == len(started) == len(by_its_worker) == 10
    # What the worker already held (one message per slot) may go first; nothing still queued.
    assert max(by_its_worker) <= slots, by_its_worker


def _overtaken(order: dict[str, int], queued_at: dict[str, int]) -> list[int]:
    """Per CRITICAL (``"seq|...|critical:NAME"`` entries of ``order``), how many counted events
    came between its submission (``queued_at[NAME]``, the counter then) and its own."""
    ahead = []
    for entry in order:
        seq, label = entry.split("|", 1)[0], entry.rsplit("|", 1)[-1]
        if label.startswith("critical:"):
            ahead.append(max(0, int(seq) - queued_at[label.split(":", 1)[1]] - 1))
    return ahead


def _received_by_its_worker(receipts: dict[str, int], queued_at: dict[str, int]) -> list[int]:
    """Per CRITICAL, how many tasks the worker that received it (``"seq|worker|label"`` entries)
    had received since it was submitted (``queued_at[NAME]``, the receipt counter then)."""
    parsed = [entry.split("|", 2) for entry in receipts]
    ahead = []
    for seq, worker, label in parsed:
        if label.startswith("critical:"):
            since = queued_at[label.split(":", 1)[1]]
            ahead.append(sum(1 for s, w, _ in parsed if w == worker and since < int(s) < int(seq)))
    return ahead


def test_critical_behind_1000_low_waits_for_at_most_the_running_task(
    tmp_path: Path, broker: Broker, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The priority drill: one worker slot, 1,000 LOW queued, then CRITICAL submitted."""
    from sluice.store import RedisStore
    from sluice.workers import Priority, submit_task
    from tests.worker_fixtures import settings_env

    prefix = _prefix()
    env = service_env(
        tmp_path, SLUICE_BROKER_URL=broker.url, SLUICE_RESULT_BACKEND=broker.result_backend,
        SLUICE_REDIS_URL=redis_url, SLUICE_KEY_PREFIX=prefix, SLUICE_HANDLER_MODULES="tests.worker_handlers",
    )  # fmt: skip
    store = RedisStore(redis_url, prefix=prefix)
    log = tmp_path / "w.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-Q", "critical,high,normal,low",
         "-c", "1", "--prefetch-multiplier", "1", "-n", f"drill-{tmp_path.name}@%h", "-l", "INFO",
         "-f", str(log)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        with settings_env(
            reconfigure_celery=True, **{k: v for k, v in env.items() if k.startswith("SLUICE_")}
        ):
            import tests.worker_handlers  # noqa: F401 - registers t_record here too

            for i in range(1000):
                submit_task("t_record", {"id": i, "label": "low", "sleep": 0.002}, Priority.LOW)
            wait_for(lambda: _ready(log), 60, "worker")
            wait_for(lambda: store.get_counter("seq") >= 50, 60, "the LOW backlog to be running")
            submit_task("t_record", {"id": "c", "label": "critical"}, "CRITICAL")
            started_before = store.get_counter("seq")  # from when the broker has it
            wait_for(lambda: store.get_counter("seq") >= 1001, 120, "all 1,001 tasks")
    finally:
        stop_processes(worker, whole_group=True)
    order = store.hgetall_counters("order")
    (critical,) = [entry for entry in order if entry.endswith("|critical")]
    jumped = max(0, int(critical.split("|", 1)[0]) - started_before - 1)
    store.clear_namespace()
    store.close()
    _announce(
        capsys,
        f"drill priority[{broker.kind}]: 1,000 LOW queued, CRITICAL submitted after "
        f"{started_before} started; completed {len(order)}, lost {1001 - len(order)}; "
        f"tasks started between its submission and its start: {jumped}",
    )
    assert len(order) == 1001
    assert jumped <= 1  # at most the task that was running when it arrived
