"""Task-processing benchmark: sluice's Celery layer vs raw Celery, measured in the same run.

    python -m benchmarks.bench_workers [--quick] [--redis-url redis://127.0.0.1:6379/12]

The Redis database given is the broker and result backend and is FLUSHED between sections; the shared
store uses the same database under a private key prefix. Worker processes are real
``celery -A sluice worker`` subprocesses importing this module (``SLUICE_HANDLER_MODULES``), so the
sluice handlers and the raw anchor tasks below exist on both sides.
"""

from __future__ import annotations

import os
import sys
import uuid

DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


def _bench_env(argv: list[str]) -> dict[str, str]:
    url = DEFAULT_REDIS
    if "--redis-url" in argv:
        url = argv[argv.index("--redis-url") + 1]
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


if __name__ == "__main__":  # settings are read once: set them before sluice is imported
    os.environ.update(_bench_env(sys.argv))

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sluice.celery import app  # noqa: E402
from sluice.workers import Priority, TaskHandler, registry, submit_batch, submit_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_CALL = 0.020
PROVIDER_ITEM = 0.0002
LOW_TASK = 0.020


# -- what the workers run ----------------------------------------------------------------------


class NoopHandler(TaskHandler):
    @property
    def task_name(self) -> str:
        return "bench_noop"

    def execute(self, payload: dict[str, Any]) -> None:
        return None


class ProviderHandler(TaskHandler):
    """A provider costing 20 ms per call + 0.2 ms per item; batches of 50."""

    priority = Priority.BATCH
    batch_size = 50

    @property
    def task_name(self) -> str:
        return "bench_embed"

    def supports_batch(self) -> bool:
        return True

    def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        time.sleep(PROVIDER_CALL + PROVIDER_ITEM * len(payloads))
        return [{"i": p["i"]} for p in payloads]


class SleepHandler(TaskHandler):
    """A task of fixed length that reports when it started."""

    @property
    def task_name(self) -> str:
        return "bench_sleep"

    def execute(self, payload: dict[str, Any]) -> float:
        started = time.time()
        time.sleep(float(payload.get("sleep", 0)))
        return started


class LimitedHandler(TaskHandler):
    rate_limit = "bench"

    @property
    def task_name(self) -> str:
        return "bench_limited"

    def execute(self, payload: dict[str, Any]) -> float:
        return time.time()


for _handler in (NoopHandler(), ProviderHandler(), SleepHandler(), LimitedHandler()):
    registry.register(_handler)


@app.task(name="bench.raw_noop", acks_late=True)
def raw_noop(payload: dict[str, Any]) -> None:
    """The anchor: the same work as ``bench_noop`` as a plain Celery task."""
    return None


@app.task(name="bench.raw_provider", acks_late=True)
def raw_provider(payload: dict[str, Any]) -> dict[str, Any]:
    """The anchor of batching: one provider call per item."""
    time.sleep(PROVIDER_CALL + PROVIDER_ITEM)
    return {"i": payload["i"]}


# -- harness -----------------------------------------------------------------------------------


class Worker:
    def __init__(self, workdir: Path, queues: str, concurrency: int, *extra: str) -> None:
        self.log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sluice", "worker", "-Q", queues,
             "-c", str(concurrency), "-P", "prefork", "--loglevel", "WARNING",
             "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "-f", str(self.log),
             "--without-gossip", "--without-mingle", "--without-heartbeat", *extra],
            env={**os.environ, "SLUICE_LOG_LEVEL": "warning"}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        ping = app.control
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
            replies = ping.ping(timeout=0.3)
            if replies:
                return
        raise RuntimeError("worker not ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def pending(url: str) -> int:
    client = redis.Redis.from_url(url)
    total = 0
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        queue = name.split("\x06\x16")[0]
        if queue in {"critical", "high", "normal", "low", "batch"} and client.type(key) == b"list":
            total += int(client.llen(key))
    client.close()
    return total


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wait_all(results: list[Any], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    for result in results:
        result.get(timeout=max(0.1, deadline - time.monotonic()), interval=0.01)


def drained_throughput(url: str, workdir: Path, n: int, submit: Callable[[int], Any]) -> float:
    """Pre-queue ``n`` tasks, start a worker (-c 2 prefork), tasks/s from first take to last."""
    flush(url)
    results = [submit(i) for i in range(n)]
    worker = Worker(workdir, "critical,high,normal,low", 2)
    try:
        while pending(url) >= n:
            if worker.process.poll() is not None:
                raise RuntimeError(worker.log.read_text()[-2000:])
            time.sleep(0.005)
        started = time.perf_counter()
        while not results[-1].ready():
            time.sleep(0.005)
        wait_all(results)
        return n / (time.perf_counter() - started)
    finally:
        worker.stop()


# -- the measurements --------------------------------------------------------------------------


def bench_submit(url: str, n: int) -> tuple[float, float]:
    flush(url)
    submit_task("bench_noop", {"i": -1})
    raw_noop.apply_async(({"i": -1},), queue="normal")
    sluice = n / timed(lambda: [submit_task("bench_noop", {"i": i}) for i in range(n)])
    flush(url)
    raw = n / timed(lambda: [raw_noop.apply_async(({"i": i},), queue="normal") for i in range(n)])
    flush(url)
    return sluice, raw


def bench_submit_batch(url: str, n: int) -> tuple[float, float]:
    flush(url)
    payloads = [{"i": i, "text": f"snippet {i}"} for i in range(n)]
    sluice = timed(lambda: submit_batch("bench_embed", payloads))
    flush(url)
    raw = timed(
        lambda: [raw_provider.apply_async((p,), queue="batch", priority=9) for p in payloads]
    )
    flush(url)
    return sluice, raw


def bench_throughput(url: str, workdir: Path, n: int) -> tuple[float, float]:
    sluice = drained_throughput(url, workdir, n, lambda i: submit_task("bench_noop", {"i": i}))
    raw = drained_throughput(
        url, workdir, n, lambda i: raw_noop.apply_async(({"i": i},), queue="normal")
    )
    return sluice, raw


def bench_batching(url: str, workdir: Path, batched: int, single: int) -> tuple[float, float]:
    flush(url)
    worker = Worker(workdir, "batch", 2, "--prefetch-multiplier", "16")
    try:
        worker.wait_ready()
        payloads = [{"i": i} for i in range(batched)]
        start = time.perf_counter()
        results = submit_batch("bench_embed", payloads).get(timeout=300)
        sluice = len(results) / (time.perf_counter() - start)
        start = time.perf_counter()
        handles = [raw_provider.apply_async(({"i": i},), queue="batch") for i in range(single)]
        wait_all(handles)
        raw = single / (time.perf_counter() - start)
    finally:
        worker.stop()
    return sluice, raw


def bench_critical_wait(url: str, workdir: Path, lows: int) -> tuple[float, float]:
    flush(url)
    for i in range(lows):
        submit_task("bench_sleep", {"i": i, "sleep": LOW_TASK}, Priority.LOW)
    worker = Worker(workdir, "critical,high,normal,low", 2)
    try:
        while pending(url) > lows - 10:  # the worker is busy with LOW work
            time.sleep(0.005)
        submitted = time.time()
        handle = submit_task("bench_sleep", {"i": "critical"}, Priority.CRITICAL)
        started = float(handle.get(timeout=120, interval=0.005))
        left = pending(url)
    finally:
        worker.stop()
    if left < lows // 2:
        print(f"warning: only {left} LOW tasks were still queued when CRITICAL ran")
    return started - submitted, LOW_TASK


def bench_rate_limit(url: str, workdir: Path, n: int, window: float) -> tuple[float, float]:
    flush(url)
    workers = [Worker(workdir, "critical,high,normal,low", 2) for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        handles = [submit_task("bench_limited", {"i": i}) for i in range(n)]
        wait_all(handles)
        times = sorted(float(h.get()) for h in handles)
    finally:
        for worker in workers:
            worker.stop()
    first = times[0]
    admitted = sum(1 for t in times if t <= first + window)
    return admitted, 50 * window + 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="FLUSHED between sections")
    args = parser.parse_args()
    url = args.redis_url
    q = args.quick
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, sluice: float, anchor: float, unit: str, ratio: float, goal: str) -> None:
        print(f"done: {name}", file=sys.stderr, flush=True)
        rows.append((name, f"{sluice:,.1f} {unit}", f"{anchor:,.1f} {unit}", f"{ratio:.2f}x", goal))

    try:
        n = 1000 if q else 5000
        s, r = bench_submit(url, n)
        row(f"submit x{n}", s, r, "/s", s / r, ">= 0.8x, >= 1,000/s")

        n = 2000 if q else 10_000
        s_t, r_t = bench_submit_batch(url, n)
        row(f"submit_batch x{n}", n / s_t, n / r_t, "payloads/s", r_t / s_t, ">= 5x")

        n = 400 if q else 3000
        s, r = bench_throughput(url, workdir, n)
        row(f"worker throughput x{n} (prefork -c 2)", s, r, "tasks/s", s / r, ">= 0.8x")

        b, single = (500, 100) if q else (3000, 400)
        s, r = bench_batching(url, workdir, b, single)
        row("batching gain (20 ms/call + 0.2 ms/item)", s, r, "items/s", s / r, ">= 10x")

        lows = 300 if q else 1000
        wait, task = bench_critical_wait(url, workdir, lows)
        row(
            f"CRITICAL wait behind {lows} LOW",
            wait * 1000, task * 1000, "ms", wait / task, "<= 1 task length",
        )  # fmt: skip

        n, window = (120, 1.5) if q else (600, 8.0)
        admitted, expected = bench_rate_limit(url, workdir, n, window)
        row(
            f"rate limit 50/s burst 10, {window:g}s, 4 procs",
            admitted, expected, "admitted", admitted / expected, "within 5%",
        )  # fmt: skip
    finally:
        flush(url)

    table = Table(title="sluice workers vs raw Celery (same Redis, same run)", title_justify="left")
    for column in ("measure", "sluice", "anchor", "ratio", "goal"):
        table.add_column(column)
    for values in rows:
        table.add_row(*values)
    Console().print(table)


if __name__ == "__main__":
    main()
