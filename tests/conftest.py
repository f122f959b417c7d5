"""Service fixtures shared by every test.

A service fixture yields a URL when the service is reachable and skips with the reason when it is not,
unless ``SLUICE_REQUIRE_SERVICES=1`` (CI), where an unreachable service fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

# Tests run on the embedded defaults in a private data directory, whatever the caller's shell has set;
# tests that need services build their own environment from the fixtures below.
for _name in list(os.environ):
    if _name.startswith("SLUICE_") and not _name.startswith(("SLUICE_TEST_", "SLUICE_REQUIRE")):
        del os.environ[_name]
for _flag in (
    "CACHE_ENABLED",
    "ASYNC_PROCESSING_ENABLED",
    "QUERY_CACHE_ENABLED",
    "CDN_COMPRESSION_ENABLED",
):
    os.environ.pop(_flag, None)
os.environ["SLUICE_DATA_DIR"] = tempfile.mkdtemp(prefix="sluice-test-")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

REQUIRE_SERVICES = os.environ.get("SLUICE_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get(
    "SLUICE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("SLUICE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


#: Rounds of each drill under ``--stress``, and the CPU-bound processes running beside it.
STRESS_ROUNDS = 3
STRESS_BURNERS = 2
#: A burner stops by itself after this long, whatever happens to the test run.
STRESS_BURNER_SECONDS = 900
#: pytest-timeout for one drill round under ``--stress``.
STRESS_TIMEOUT = 900


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stress",
        action="store_true",
        help=f"run each drill {STRESS_ROUNDS} times beside {STRESS_BURNERS} CPU-bound processes "
        "(by hand; CI runs each drill once)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A loaded machine runs a drill several times slower: the time limit is not what is tested.
    if config.getoption("--stress"):
        for item in items:
            if item.get_closest_marker("drill"):
                item.add_marker(pytest.mark.timeout(STRESS_TIMEOUT))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.config.getoption("--stress") and metafunc.definition.get_closest_marker("drill"):
        metafunc.fixturenames.append("stress_load")
        metafunc.parametrize(
            "stress_load",
            range(1, STRESS_ROUNDS + 1),
            indirect=True,
            ids=[f"stress{n}" for n in range(1, STRESS_ROUNDS + 1)],
        )


@pytest.fixture
def stress_load(request: pytest.FixtureRequest) -> Iterator[int]:
    """CPU-bound load on every core the machine has, for the length of one drill round."""
    burn = (
        f"import time\nend = time.time() + {STRESS_BURNER_SECONDS}\nwhile time.time() < end: pass"
    )
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(STRESS_BURNERS)]
    try:
        yield int(request.param)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> str:
    """Return ``url`` if the service answers; otherwise skip, or fail when services are required."""
    if _reachable(url):
        return url
    reason = f"{name} is not reachable at {url} (set SLUICE_TEST_{name.upper()}_URL)"
    if REQUIRE_SERVICES:
        pytest.fail(f"SLUICE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def require_tool(reason: str) -> None:
    """Skip with ``reason`` (a tool or extension that is not installed), or fail when
    ``SLUICE_REQUIRE_SERVICES=1`` (CI, which installs every tool)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"SLUICE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


#: Extensions to treat as not installed (comma-separated): how the fresh-machine test simulates a
#: server without HypoPG through the same detection as a real one.
HIDDEN_EXTENSIONS = {
    name.strip() for name in os.environ.get("SLUICE_TEST_HIDE_EXTENSIONS", "").split(",") if name
}


def postgres_extension_available(url: str, name: str) -> bool:
    """Whether the PostgreSQL server at ``url`` can ``CREATE EXTENSION name``."""
    if name in HIDDEN_EXTENSIONS:
        return False
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_available_extensions WHERE name = :name"), {"name": name}
            ).first()
            return found is not None
    finally:
        engine.dispose()


def require_hypopg(url: str) -> None:
    """Skip (fail under ``SLUICE_REQUIRE_SERVICES=1``) unless the server at ``url`` has HypoPG."""
    if not postgres_extension_available(url, "hypopg"):
        require_tool(
            "the HypoPG extension is not installed on the PostgreSQL server "
            "(apt-get install postgresql-<version>-hypopg; .ci/run installs it)"
        )


@pytest.fixture(scope="session")
def hypopg(postgres_url: str) -> str:
    """The database URL with the HypoPG extension created (database-wide, never dropped)."""
    require_hypopg(postgres_url)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS hypopg SCHEMA public"))
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("redis", REDIS_URL)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_service("database", DATABASE_URL)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return require_service("amqp", AMQP_URL)


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix for one test; every key under it is deleted afterwards."""
    import redis

    prefix = f"sluice-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; its URL puts it first on the search_path."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema},public"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a sluice subprocess: a private data dir plus ``extra`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def run_sluice(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the ``sluice`` command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


class WorkerProcess:
    """A ``celery -A sluice worker`` subprocess, stopped with a warm shutdown."""

    def __init__(
        self,
        env: dict[str, str],
        log_file: Path,
        queues: str = "critical,high,normal,low,batch",
        concurrency: int = 2,
    ) -> None:
        self.log_file = log_file
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "sluice",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-n",
                self.name,
                "--loglevel",
                "INFO",
                "-f",
                str(log_file),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_file.read_text()[-2000:]}")
            if self.log_file.exists() and " ready." in self.log_file.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s: {self.log_file.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_processes(self.process)


def stop_processes(*processes: subprocess.Popen[Any], whole_group: bool = False) -> None:
    """Warm shutdown: SIGTERM to each process, all signalled before any is waited for (an idle
    prefork worker takes about 3 s); one still running after 30 s is killed. ``whole_group`` (a
    process started in a session of its own): then SIGKILL whatever is left of its group.

    SIGTERM goes to the main process only, never the group: a pool child killed between finishing
    a task and its parent's ack had the task redelivered to a worker still running, which ran it
    again (an 11th run in 10).
    """
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
        if whole_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def redis_broker_url(redis_url: str) -> Iterator[str]:
    """A Redis database of its own for Celery messages (db 14), emptied before and after."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_broker_url(amqp_url: str) -> Iterator[str]:
    """A RabbitMQ virtual host of its own for one test, deleted afterwards.

    Without ``rabbitmqctl`` on this machine (a remote broker), the configured vhost is used and
    sluice's queues are purged before and after instead.
    """
    import kombu

    parts = urlsplit(amqp_url)
    if shutil.which("rabbitmqctl") is None:
        with kombu.Connection(amqp_url) as connection:
            channel = connection.default_channel
            for name in ("priority", "batch"):
                try:
                    channel.queue_purge(name)
                except Exception:
                    channel = connection.channel()  # the queue did not exist; the channel closed
        yield amqp_url
        return
    vhost = f"sluice_test_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    yield parts._replace(path=f"/{vhost}").geturl()
    _rabbitmqctl("delete_vhost", vhost)


@dataclass(frozen=True)
class Broker:
    """One broker under test: its kind (``redis`` or ``amqp``), URL and the result backend to use."""

    kind: str
    url: str
    result_backend: str


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest, redis_broker_url: str) -> Broker:
    """Each distributed broker in turn: the test runs once on Redis and once on RabbitMQ.

    Results go to Redis (database 14) in both cases; on RabbitMQ the messages live in a private
    virtual host.
    """
    if request.param == "redis":
        return Broker("redis", redis_broker_url, redis_broker_url)
    return Broker("amqp", request.getfixturevalue("amqp_broker_url"), redis_broker_url)
