"""Task-processing benchmark: sluice's Celery layer vs raw Celery, measured in the same run.

    python -m benchmarks.bench_workers [--quick] [--redis-url redis://127.0.0.1:6379/11]

The Redis database given is the broker and result backend and is FLUSHED between sections; the shared
store uses the same database under a private key prefix. Worker processes are real
``celery -A sluice worker`` subprocesses importing this module (``SLUICE_HANDLER_MODULES``), so the
sluice handlers and the raw anchor tasks below exist on both sides. Submit and throughput alternate
sluice and raw rounds and report each side's median. One priority worker serves every priority
section (its consumers are cancelled while a backlog is queued, then added back in priority order),
one batch worker the batching section, and a second priority worker joins for the rate limit.
"""

from __future__ import annotations

import sys

from benchmarks import services

if __name__ == "__main__":  # settings are read once: set them before sluice is imported
    services.configure_environment(sys.argv)

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.report import Measurement, print_table
from benchmarks.services import PRIORITY_QUEUES, Worker, flush
from sluice.celery import app
from sluice.workers import Priority, TaskHandler, registry, submit_batch, submit_task

SECTION = "workers"
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
    """Wait until every result is stored, reading the backend (``ready()``) rather than ``get()``.

    ``AsyncResult.get`` waits on the Redis backend's pub/sub; in this setup it can stall for tens
    of seconds after tasks were republished under the same id (rate-limit waits) although the results
    are already stored, which would measure the client rather than the workers.
    """
    deadline = time.monotonic() + timeout
    for result in results:
        while not result.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(results)} results not ready in {timeout}s")
            time.sleep(0.005)


def ping(names: list[str] | None = None) -> list[dict[str, Any]]:
    return app.control.ping(timeout=0.3, destination=names) or []


def start(workers: list[Worker]) -> list[Worker]:
    services.wait_ready(workers, ping)
    return workers


def pause(worker: Worker) -> None:
    """Stop ``worker`` taking priority tasks (so a backlog can be queued in front of it)."""
    for queue in PRIORITY_QUEUES.split(","):
        app.control.cancel_consumer(queue, destination=[worker.name], reply=True, timeout=5)


def resume(worker: Worker) -> None:
    """Consume the priority queues again, added in priority order (critical first)."""
    for queue in PRIORITY_QUEUES.split(","):
        app.control.add_consumer(queue, destination=[worker.name], reply=True, timeout=5)


def drained_throughput(url: str, worker: Worker, n: int, submit: Callable[[int], Any]) -> float:
    """Queue ``n`` tasks in front of the paused worker, resume it: tasks/s from first take to last."""
    flush(url)
    pause(worker)
    results = [submit(i) for i in range(n)]
    resume(worker)
    while pending(url) >= n:
        worker.check()
        time.sleep(0.005)
    started = time.perf_counter()
    wait_all(results)
    return n / (time.perf_counter() - started)


# -- the measurements --------------------------------------------------------------------------


def alternating(
    rounds: int, sluice: Callable[[], float], raw: Callable[[], float]
) -> tuple[float, float]:
    """Median rate of each side over ``rounds`` alternating rounds (a shared machine's load drifts)."""
    pairs = [(sluice(), raw()) for _ in range(rounds)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def bench_submit(url: str, n: int, rounds: int) -> tuple[float, float]:
    flush(url)
    submit_task("bench_noop", {"i": -1})
    raw_noop.apply_async(({"i": -1},), queue="normal")

    def sluice() -> float:
        flush(url)
        return n / timed(lambda: [submit_task("bench_noop", {"i": i}) for i in range(n)])

    def raw() -> float:
        flush(url)
        return n / timed(
            lambda: [raw_noop.apply_async(({"i": i},), queue="normal") for i in range(n)]
        )

    try:
        return alternating(rounds, sluice, raw)
    finally:
        flush(url)


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


def bench_throughput(url: str, worker: Worker, n: int, rounds: int) -> tuple[float, float]:
    return alternating(
        rounds,
        lambda: drained_throughput(url, worker, n, lambda i: submit_task("bench_noop", {"i": i})),
        lambda: drained_throughput(
            url, worker, n, lambda i: raw_noop.apply_async(({"i": i},), queue="normal")
        ),
    )


def bench_batching(url: str, batched: int, single: int) -> tuple[float, float]:
    flush(url)
    payloads = [{"i": i} for i in range(batched)]
    start = time.perf_counter()
    handle = submit_batch("bench_embed", payloads)
    wait_all([handle])
    results = handle.get(timeout=300)
    sluice = len(results) / (time.perf_counter() - start)
    start = time.perf_counter()
    handles = [raw_provider.apply_async(({"i": i},), queue="batch") for i in range(single)]
    wait_all(handles)
    raw = single / (time.perf_counter() - start)
    return sluice, raw


def bench_critical_wait(url: str, worker: Worker, lows: int) -> tuple[float, int]:
    flush(url)
    pause(worker)
    for i in range(lows):
        submit_task("bench_sleep", {"i": i, "sleep": LOW_TASK}, Priority.LOW)
    resume(worker)
    while pending(url) > lows - 10:  # the worker is busy with LOW work
        worker.check()
        time.sleep(0.005)
    submitted = time.time()
    handle = submit_task("bench_sleep", {"i": "critical"}, Priority.CRITICAL)
    wait_all([handle], timeout=120)
    started = float(handle.get(timeout=10))
    left = pending(url)
    flush(url)  # the LOW backlog is not needed any more
    return started - submitted, left


def bench_rate_limit(url: str, n: int, window: float) -> tuple[float, float]:
    flush(url)
    handles = [submit_task("bench_limited", {"i": i}) for i in range(n)]
    wait_all(handles)
    times = sorted(float(h.get(timeout=10)) for h in handles)
    first = times[0]
    admitted = sum(1 for t in times if t <= first + window)
    return admitted, 50 * window + 10


def run(quick: bool = False, url: str | None = None) -> list[Measurement]:
    """Every section; ``url`` is the broker of this process's settings (and is flushed)."""
    url = url or os.environ["SLUICE_BROKER_URL"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    out: list[Measurement] = []

    def row(metric: str, value: float, unit: str, target: str, anchor: str, anchor_value: float,
            ratio: float, met: bool, note: str = "") -> None:  # fmt: skip
        print(f"workers: done {metric}", file=sys.stderr, flush=True)
        out.append(Measurement(SECTION, metric, value, unit, target, anchor, anchor_value,
                               ratio, met, note))  # fmt: skip

    workers: list[Worker] = []
    try:
        rounds = 3 if quick else 5
        n = 1000 if quick else 5000
        s, r = bench_submit(url, n // rounds, rounds)
        row(f"submit x{n}", s, "tasks/s", ">= 1.0x anchor (issue); > 1,000/s (guide)",
            "raw apply_async", r, s / r, s / r >= 1.0 and s > 1000)  # fmt: skip

        n = 2000 if quick else 10_000
        s_t, r_t = bench_submit_batch(url, n)
        row(f"submit_batch x{n}", n / s_t, "payloads/s", ">= 5x faster (issue)",
            f"{n} raw apply_async", n / r_t, r_t / s_t, r_t / s_t >= 5)  # fmt: skip

        priority = Worker(workdir, PRIORITY_QUEUES, 2)
        batch = Worker(workdir, "batch", 2, "--prefetch-multiplier", "16")
        workers += start([priority, batch])

        n = 400 if quick else 3000
        s, r = bench_throughput(url, priority, n // rounds, rounds)
        row(f"worker throughput, no-op x{n} (prefork -c 2)", s, "tasks/s", ">= 1.0x (issue)",
            "raw Celery task, same pool", r, s / r, s / r >= 1.0)  # fmt: skip

        b, single = (500, 100) if quick else (3000, 400)
        s, r = bench_batching(url, b, single)
        row("batching gain (provider 20 ms/call + 0.2 ms/item)", s, "items/s",
            ">= 10x (issue); > 30% (guide)", "one raw task per item", r, s / r,
            s / r >= 10)  # fmt: skip

        lows = 300 if quick else 1000
        wait, left = bench_critical_wait(url, priority, lows)
        row(f"CRITICAL wait behind {lows} queued LOW", wait * 1000, "ms",
            "<= 1 running task's length (issue)", "length of one LOW task", LOW_TASK * 1000,
            wait / LOW_TASK, wait <= LOW_TASK * 1.25,
            f"{left} LOW still queued")  # fmt: skip

        workers += start([Worker(workdir, PRIORITY_QUEUES, 2)])
        n, window = (120, 1.5) if quick else (600, 8.0)
        admitted, expected = bench_rate_limit(url, n, window)
        row(f"rate limit 50/s burst 10 over {window:g} s, 4 processes", admitted, "admitted",
            "within 5% (issue)", "rate x time + burst", expected, admitted / expected,
            abs(admitted / expected - 1) <= 0.05)  # fmt: skip
    finally:
        services.stop_all(workers)
        flush(url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    parser.add_argument("--redis-url", default=services.REDIS_URL, help="FLUSHED between sections")
    args = parser.parse_args()
    print_table(
        run(args.quick, args.redis_url), "sluice workers vs raw Celery (same Redis, same run)"
    )


if __name__ == "__main__":
    main()
