"""Every benchmark of sluice in one run, one table, one report.

    python -m benchmarks          # full (~10 min on 2 cores): benchmarks/RESULTS.md + results.png
    python -m benchmarks --quick  # small sizes (~2 min): prints, and writes the report to a temp dir

Services: Redis (``SLUICE_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/11``, FLUSHED) and
PostgreSQL (``SLUICE_BENCH_DATABASE_URL``, private schemas); see :mod:`benchmarks.services`.
Nothing is asserted: the exit status is 1 only when a benchmark could not run.
"""

from __future__ import annotations

import sys

from benchmarks import services

services.configure_environment(sys.argv)  # before anything imports sluice

import argparse  # noqa: E402
import importlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.report import Measurement, machine, markdown, plot, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
#: (name, module): the order they run in.
SECTIONS = [
    ("cli", "benchmarks.bench_cli"),
    ("cache", "benchmarks.bench_cache"),
    ("query", "benchmarks.bench_query"),
    ("cdn", "benchmarks.bench_cdn"),
    ("workers", "benchmarks.bench_workers"),
    ("workload", "benchmarks.bench_workload"),
    ("distributed", "benchmarks.bench_distributed"),
    ("admission", "benchmarks.bench_admission"),
]
#: Sections too long for ``--quick`` (run them with ``--only``).
FULL_ONLY = {"distributed"}
NOTES = [
    "cli: `sluice --help` and a warm `sluice analyze examples/` on embedded defaults, each a fresh "
    "process timed from start to exit (medians); the anchor of the embedded run is the same run "
    "inline.",
    "ratio: sluice / anchor for latencies, sizes and counts; for rates and for rows whose target "
    "says 'faster', the speed-up (anchor time / sluice time, or sluice rate / anchor rate).",
    "AI cache: medians of 25 blocks of operations; L2 = Redis (private key prefix) or diskcache.",
    "query: PostgreSQL in a private schema seeded with `sluice.db.seed`; 'before' is migration 001 "
    "(no indexes of 004), 'after' is head + ANALYZE.",
    "workers: one priority worker (prefork -c 2) serves every priority section (its consumers are "
    "cancelled while a backlog is queued), one batch worker the batching section, a second "
    "priority worker joins for the rate limit (4 processes). Completion is read from the result "
    "backend (`ready()`), not `AsyncResult.get()` (see the worker module's `wait_all`).",
    "workload: `sluice analyze TREE --workers 0` as a subprocess with two `celery -A sluice worker` "
    "processes (priority pool -c 2, batch pool -c 2 --prefetch-multiplier 64), broker and results on "
    "Redis, store on another Redis database, application database on PostgreSQL; the local "
    "(offline) AI provider; tasks counted by the workers' `inspect stats`.",
    "distributed: the celery and kombu sources (242 files) reviewed by `sluice analyze` (a "
    "subprocess, start to exit) inline in one process (the anchor) and on Redis + PostgreSQL with "
    "two `celery -A sluice worker` pools (-c 2 each); rounds interleave inline and distributed, "
    "cold (cache cleared) then warm; medians. Full runs only.",
    "admission: four `celery -A sluice worker -P threads -c 8` processes on Redis against the "
    "fake OpenAI-compatible provider (tests/fake_openai.py) enforcing a TPM cap per model; quick "
    "mode shortens the limit window to 5 s (SLUICE_AI_LIMIT_WINDOW), full mode uses real minutes.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; report to a temp dir")
    parser.add_argument(
        "--only", help="comma-separated sections: " + ", ".join(n for n, _ in SECTIONS)
    )
    parser.add_argument("--output", type=Path, help="directory for RESULTS.md and results.png")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {name for name, _ in SECTIONS}
    output = args.output or (Path(tempfile.mkdtemp(prefix="sluice-bench-")) if args.quick else HERE)

    measurements: list[Measurement] = []
    failed: list[str] = []
    notes = list(NOTES)
    durations = []
    started = time.perf_counter()
    for name, module_name in SECTIONS:
        if name not in chosen or (args.quick and not args.only and name in FULL_ONLY):
            continue
        print(f"== {name} ...", file=sys.stderr, flush=True)
        section_started = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            measurements += module.run(args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        took = time.perf_counter() - section_started
        durations.append(f"{name} {took:.0f} s")
        print(f"== {name}: {took:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    notes.append(f"run time {total:.0f} s ({', '.join(durations)})")
    if failed:
        notes.append(f"FAILED to run: {', '.join(failed)}")

    mode = "quick" if args.quick else "full"
    title = f"sluice benchmarks ({mode} run) vs anchors measured in the same run"
    print_table(measurements, title)
    info = machine(services.REDIS_URL, services.DATABASE_URL)
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    output.mkdir(parents=True, exist_ok=True)
    (output / "RESULTS.md").write_text(
        markdown(measurements, info, command=command, notes=notes, plot_name="results.png")
    )
    plot(measurements, output / "results.png", f"{title}\n{info['CPU']}, {info['cores']}")
    print(f"report: {output / 'RESULTS.md'}, plot: {output / 'results.png'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
