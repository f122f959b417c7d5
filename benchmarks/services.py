"""The services every benchmark runs on, and the harness pieces they share.

Redis: ``SLUICE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/11``) is the benchmarks' own
database and is FLUSHED by the worker and workload benchmarks; nothing else is flushed (the workload's
shared store lives in the next lower database under a private key prefix, deleted afterwards).
PostgreSQL: ``SLUICE_BENCH_DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
each benchmark works in a private schema dropped afterwards.

This module never imports :mod:`sluice`: :func:`configure_environment` must run before the first
``sluice`` import, because sluice reads its settings once per process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("SLUICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
DATABASE_URL = os.environ.get(
    "SLUICE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PRIORITY_QUEUES = "critical,high,normal,low"


def redis_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` of the same server."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


def store_url(url: str = REDIS_URL) -> str:
    """The database next to the flushed one: shared stores live there under private prefixes."""
    db = int(url.rsplit("/", 1)[1] or 0)
    return redis_db(url, db - 1 if db > 0 else db + 1)


def worker_env(url: str = REDIS_URL) -> dict[str, str]:
    """Settings of the worker benchmark (broker, results and store on ``url``)."""
    return {
        "SLUICE_BROKER_URL": url,
        "SLUICE_RESULT_BACKEND": url,
        "SLUICE_REDIS_URL": url,
        "SLUICE_KEY_PREFIX": f"bench-workers-{uuid.uuid4().hex[:8]}:",
        "SLUICE_HANDLER_MODULES": "benchmarks.bench_workers",
        "SLUICE_RATE_LIMITS": "bench=50:10",
        "SLUICE_BATCH_FLUSH_INTERVAL": "0.1",
        "SLUICE_LOG_LEVEL": "warning",
    }


def configure_environment(argv: list[str]) -> None:
    """Set this process's sluice settings (before sluice is imported): ``--redis-url`` wins."""
    url = argv[argv.index("--redis-url") + 1] if "--redis-url" in argv else REDIS_URL
    os.environ.update(worker_env(url))


def flush(url: str) -> None:
    """Empty the benchmarks' own Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


@contextmanager
def private_schema(url: str = DATABASE_URL) -> Iterator[str]:
    """A fresh PostgreSQL schema; yields a URL with it first on the search_path. Dropped after."""
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema},public"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Worker:
    """A ``celery -A sluice worker`` subprocess (prefork), stopped with a warm shutdown."""

    def __init__(
        self,
        workdir: Path,
        queues: str,
        concurrency: int,
        *extra: str,
        env: dict[str, str] | None = None,
        loglevel: str = "WARNING",
    ) -> None:
        name = f"bench-{uuid.uuid4().hex[:6]}"
        self.log = workdir / f"worker-{name}.log"
        self.name = f"{name}@{socket.gethostname()}"  # what Celery makes of ``%h``
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-Q", queues,
             "-c", str(concurrency), "-P", "prefork", "--loglevel", loglevel, "-n", self.name,
             "-f", str(self.log), "--without-gossip", "--without-mingle", "--without-heartbeat",
             *extra],
            env={**(os.environ if env is None else env), "SLUICE_LOG_LEVEL": "warning"},
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"worker exited ({self.process.returncode}): {tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_ready(workers: list[Worker], ping: Callable[[], Any], timeout: float = 90) -> None:
    """Wait until every worker answers ``ping()`` (a list of ``{name: reply}``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check()
        replies = ping() or []
        answered = {name for reply in replies for name in reply}
        if all(w.name in answered for w in workers):
            return
        time.sleep(0.1)
    raise RuntimeError("workers not ready in time")


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        worker.stop()
