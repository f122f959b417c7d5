"""A large real workload: ``sluice analyze`` over installed packages' sources, twice.

    python -m benchmarks.bench_workload [--quick] [--packages celery,kombu,...]

The Python sources of celery, kombu, SQLAlchemy and Alembic, plus pip, setuptools, numpy, sqlglot,
rich and hypothesis (as installed next to sluice: about 2,100 files) are copied into a temporary tree
and analysed by ``sluice analyze TREE --workers 0`` (a subprocess, as a user runs it) on Redis and
PostgreSQL with two ``celery -A sluice worker`` processes of two pool processes each: a priority pool
(``-Q critical,high,normal,low``) and a batch pool (``-Q batch --prefetch-multiplier 64``).
Measured: files/s and tasks/s (tasks counted by the workers' own ``inspect stats``), peak RSS of
every worker process (sampled with psutil), then the same run with the cache warm: provider calls
(from the summary table) and the speed-up; then the same tree inline in one process
(``ASYNC_PROCESSING_ENABLED=false``), cold and warm, as the anchor. ``--quick`` analyses kombu alone.

Redis: the benchmarks' database (``SLUICE_BENCH_REDIS_URL``, default db 11) is the broker and result
backend and is FLUSHED; the store is the database below it under a private prefix, deleted afterwards.
PostgreSQL: a private schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import services
from benchmarks.report import Measurement, print_table

SECTION = "workload"
#: The four the issue names hold about 580 modules; six more installed packages make it thousands.
FULL_PACKAGES = (
    "celery", "kombu", "sqlalchemy", "alembic",
    "pip", "setuptools", "numpy", "sqlglot", "rich", "hypothesis",
)  # fmt: skip
QUICK_PACKAGES = ("kombu",)
MB = 2**20


def copy_sources(packages: tuple[str, ...], target: Path) -> tuple[int, int]:
    """Copy the installed ``.py`` files of ``packages`` under ``target``; return (files, bytes)."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = size = 0
    for package in packages:
        source = site / package
        if not source.is_dir():
            raise RuntimeError(f"{package} is not installed in {site}")
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            destination = target / package / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            files += 1
            size += path.stat().st_size
    return files, size


class RssSampler(threading.Thread):
    """Peak RSS of every process of the given worker trees (main process and pool children)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.peaks: dict[tuple[str, int], int] = {}
        self.peak_totals: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                total = 0
                for proc in tree:
                    try:
                        rss = proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        continue
                    total += rss
                    key = (name if proc.pid == pid else f"{name} pool", proc.pid)
                    self.peaks[key] = max(rss, self.peaks.get(key, 0))
                self.peak_totals[name] = max(total, self.peak_totals.get(name, 0))
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()


@dataclass
class Run:
    seconds: float
    files: int
    provider_calls: int
    cache_hits: int
    tasks: int
    summary: dict[str, str] = field(default_factory=dict)


def summary_rows(output: str) -> dict[str, str]:
    """The rows of ``sluice analyze``'s summary table: {"provider calls": "123", ...}."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def clear_cache(env: dict[str, str]) -> None:
    """Every process's cached analyses become unreachable (a new cache generation)."""
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "cache", "clear"],
        env=env, cwd=services.ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"sluice cache clear failed: {done.stderr[-2000:]}")
    time.sleep(1.5)  # workers re-read the generation at most a second later


def tasks_done(env: dict[str, str]) -> int:
    """Tasks the running workers have executed so far (their own counters)."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "sluice", "inspect", "stats", "--json",
         "--timeout", "5"],
        env=env, cwd=services.ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    text = out.stdout[out.stdout.find("{") :]
    replies = json.loads(text) if text else {}
    return sum(sum(reply.get("total", {}).values()) for reply in replies.values())


def analyze(tree: Path, env: dict[str, str], count_tasks: bool = True) -> Run:
    """``sluice analyze TREE`` as a user runs it; ``count_tasks``: ask the workers how many tasks
    it took (off for inline runs, and where the seconds of ``inspect`` matter)."""
    before = tasks_done(env) if count_tasks else 0
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "analyze", str(tree), "--workers", "0",
         "--max-findings", "0"],
        env={**env, "COLUMNS": "200"}, cwd=services.ROOT, capture_output=True, text=True,
        timeout=3600,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sluice analyze exited {done.returncode}: {done.stderr[-3000:]}")
    rows = summary_rows(done.stdout)
    files = int(rows["files analysed"].split()[0])
    hits = int(rows["cache hits"].split()[0])
    return Run(
        seconds=seconds,
        files=files,
        provider_calls=int(rows["provider calls"]),
        cache_hits=hits,
        tasks=tasks_done(env) - before if count_tasks else 0,
        summary=rows,
    )


def run(quick: bool = False, packages: tuple[str, ...] | None = None) -> list[Measurement]:
    packages = packages or (QUICK_PACKAGES if quick else FULL_PACKAGES)
    broker = services.REDIS_URL
    store = services.store_url(broker)
    prefix = f"bench-workload-{uuid.uuid4().hex[:8]}:"
    workdir = Path(tempfile.mkdtemp(prefix="bench-workload-"))
    tree = workdir / "tree"
    files, size = copy_sources(packages, tree)
    services.flush(broker)
    workers: list[services.Worker] = []
    try:
        with services.private_schema() as database_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
            env.update(
                SLUICE_DATA_DIR=str(workdir / "data"),
                SLUICE_BROKER_URL=broker,
                SLUICE_RESULT_BACKEND=broker,
                SLUICE_REDIS_URL=store,
                SLUICE_KEY_PREFIX=prefix,
                SLUICE_DATABASE_URL=database_url,
                SLUICE_LOG_LEVEL="warning",
            )
            upgraded = subprocess.run(
                [sys.executable, "-m", "sluice.cli", "db", "upgrade"],
                env=env, cwd=services.ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if upgraded.returncode != 0:
                raise RuntimeError(f"sluice db upgrade failed: {upgraded.stderr[-2000:]}")
            workers = [
                services.Worker(workdir, services.PRIORITY_QUEUES, 2, env=env),
                services.Worker(workdir, "batch", 2, "--prefetch-multiplier", "64", env=env),
            ]
            wait_workers(workers, env)
            sampler = RssSampler({"priority": workers[0].pid, "batch": workers[1].pid})
            sampler.start()
            try:
                cold = analyze(tree, env)
                warm = analyze(tree, env)
                # The anchor: the same review inline in one process, cold then warm.
                inline_env = {**env, "ASYNC_PROCESSING_ENABLED": "false"}
                clear_cache(env)
                inline_cold = analyze(tree, inline_env, count_tasks=False)
                inline_warm = analyze(tree, inline_env, count_tasks=False)
                stats = subprocess.run(
                    [sys.executable, "-m", "sluice.cli", "cache", "stats"],
                    env={**env, "COLUMNS": "200"}, cwd=services.ROOT, capture_output=True,
                    text=True, timeout=120,
                )  # fmt: skip
                print(
                    f"workload: sluice cache stats after both runs:\n{stats.stdout}",
                    file=sys.stderr,
                )
            finally:
                sampler.stop()
    finally:
        services.stop_all(workers)
        services.flush(broker)
        services.delete_prefix(store, prefix)
        shutil.rmtree(workdir, ignore_errors=True)

    described = f"{files:,} files, {size / MB:.1f} MB ({', '.join(packages)})"
    pool = {key: rss for key, rss in sampler.peaks.items() if key[0].endswith("pool")}
    print(
        f"workload: {described}; cold {cold.seconds:.1f} s, warm {warm.seconds:.1f} s; "
        f"cold summary {cold.summary}",
        file=sys.stderr,
    )
    per_process = ", ".join(
        f"{name} {pid}: {rss / MB:.0f}" for (name, pid), rss in sorted(sampler.peaks.items())
    )
    return [
        Measurement(
            SECTION,
            f"analyze {described}, cold cache: files",
            cold.files / cold.seconds,
            "files/s",
            "(report; inline beside it)",
            "inline, one process",
            inline_cold.files / inline_cold.seconds,
            note=f"{cold.files} files in {cold.seconds:.1f} s, 4 pool processes; "
            f"inline {inline_cold.seconds:.1f} s",
        ),
        Measurement(
            SECTION,
            "analyze again, warm cache: files, vs inline",
            warm.files / warm.seconds,
            "files/s",
            "(report; inline beside it)",
            "inline, one process, warm",
            inline_warm.files / inline_warm.seconds,
            note=f"{warm.seconds:.1f} s vs inline {inline_warm.seconds:.1f} s",
        ),
        Measurement(
            SECTION,
            "analyze, cold cache: tasks (analysis chunks and session tasks)",
            cold.tasks / cold.seconds,
            "tasks/s",
            "(report)",
            note=f"{cold.tasks} tasks",
        ),
        Measurement(
            SECTION,
            "peak RSS per worker pool process (largest of 4)",
            max(pool.values()) / MB,
            "MiB",
            "(report)",
            note=per_process + " MiB",
        ),
        Measurement(
            SECTION,
            "peak RSS per celery worker (main + 2 pool processes, largest)",
            max(sampler.peak_totals.values()) / MB,
            "MiB",
            "(report)",
            note=", ".join(f"{k} {v / MB:.0f} MiB" for k, v in sampler.peak_totals.items()),
        ),
        Measurement(
            SECTION,
            "analyze again, warm cache: provider calls",
            warm.provider_calls,
            "calls",
            "0 (every file a cache hit)",
            "cold run",
            cold.provider_calls,
            met=warm.provider_calls == 0,
            note=f"{warm.cache_hits} cache hits of {warm.files}",
        ),
        Measurement(
            SECTION,
            "analyze again, warm cache: files",
            warm.files / warm.seconds,
            "files/s",
            "faster than cold (report the speed-up)",
            "cold run",
            cold.files / cold.seconds,
            met=warm.seconds < cold.seconds,
            note=f"{warm.seconds:.1f} s, {warm.tasks / warm.seconds:.0f} tasks/s",
        ),
    ]


def wait_workers(workers: list[services.Worker], env: dict[str, str]) -> None:
    """Both workers answer a ping (through the workload's broker, not this process's settings)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check()
        logs = [w.log.read_text() if w.log.exists() else "" for w in workers]
        if all(" ready." in log for log in logs):
            return
        out = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "sluice", "inspect", "ping", "--json",
             "--timeout", "1"],
            env=env, cwd=services.ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if all(w.name in out.stdout for w in workers):
            return
    raise RuntimeError("workload workers not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="kombu's sources only")
    parser.add_argument("--packages", help="comma-separated installed packages to analyse")
    args = parser.parse_args()
    packages = tuple(args.packages.split(",")) if args.packages else None
    print_table(run(args.quick, packages), "Large real workload: sluice analyze")


if __name__ == "__main__":
    main()
