"""The command as a newcomer meets it: ``sluice --help`` and ``sluice analyze examples/`` on embedded
defaults, wall time including process start, against anchors measured in the same run.

    python -m benchmarks.bench_cli [--quick]

Anchors: the bare interpreter's start (``python -c pass``) for ``--help``, and the same warm review in
inline mode (``ASYNC_PROCESSING_ENABLED=false``: no worker, no broker) for the embedded run. Each
figure is the median of several runs; the embedded and inline runs alternate, so machine load hits
both alike. Every run has its own data directory, warmed by one untimed run (every file a cache hit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import ROOT, Measurement, print_table

SECTION = "cli"
EXAMPLES = ROOT / "examples"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(SLUICE_DATA_DIR=str(data_dir), COLUMNS="200", **extra)
    return env


def _wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def run(quick: bool) -> list[Measurement]:
    repeats = 3 if quick else 7
    sluice = [sys.executable, "-m", "sluice.cli"]
    with tempfile.TemporaryDirectory(prefix="sluice-bench-cli-") as tmp:
        base = Path(tmp)
        plain = _env(base / "help")
        bare = [_wall([sys.executable, "-c", "pass"], plain) for _ in range(repeats)]
        helps = [_wall([*sluice, "--help"], plain) for _ in range(repeats)]
        embedded_env = _env(base / "embedded")
        inline_env = _env(base / "inline", ASYNC_PROCESSING_ENABLED="false")
        analyze = [*sluice, "analyze", str(EXAMPLES)]
        _wall(analyze, embedded_env)  # warm the cache and migrate
        _wall(analyze, inline_env)
        embedded, inline = [], []
        for _ in range(repeats):
            embedded.append(_wall(analyze, embedded_env))
            inline.append(_wall(analyze, inline_env))
    help_s, bare_s = statistics.median(helps), statistics.median(bare)
    embedded_s, inline_s = statistics.median(embedded), statistics.median(inline)
    ratio = embedded_s / inline_s
    return [
        Measurement(
            SECTION,
            "sluice --help, wall time with process start",
            help_s,
            "s",
            "<= 0.5 s",
            "python -c pass",
            bare_s,
            met=help_s <= 0.5,
            note=f"median of {repeats}",
            samples=[h * 1000 for h in helps],
            anchor_samples=[b * 1000 for b in bare],
        ),
        Measurement(
            SECTION,
            "sluice analyze examples/ warm, embedded worker, wall time with process start",
            embedded_s,
            "s",
            "<= 3 s and <= 1.5x inline",
            "same run inline (ASYNC_PROCESSING_ENABLED=false)",
            inline_s,
            ratio=ratio,
            met=embedded_s <= 3.0 and ratio <= 1.5,
            note=f"median of {repeats}; runs {', '.join(f'{e:.2f}' for e in embedded)} s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    print_table(run(args.quick), "The command: start-up and a warm embedded review")


if __name__ == "__main__":
    main()
