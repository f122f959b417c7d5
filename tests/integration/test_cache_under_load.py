"""Writes and reads survive load: a busy machine makes the store slow, not dead.

A full benchmark run on a busy machine once made 170 provider calls in the warm re-run of a
2,119-file workload: a few L2 timeouts in a row opened one process's circuit breaker, and for its
reset period every write of that process was skipped (and every lookup missed). This runs the main
job twice with every CPU busy (one CPU-bound load generator per core beside the workers). The
breaker's rule itself (timeouts and slow calls open it only when sustained) is tested
deterministically in ``tests/unit/test_cache_breaker.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_sluice, service_env

pytestmark = pytest.mark.integration


@pytest.fixture
def every_cpu_busy() -> Iterator[None]:
    """One CPU-bound load generator per core, for the duration of the test."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _summary_calls(stdout: str) -> int:
    found = re.search(r"provider calls\s*│\s*(\d+)", stdout)
    assert found, stdout
    return int(found.group(1))


def test_warm_rerun_of_a_real_tree_with_every_cpu_busy_makes_no_provider_calls(
    tmp_path: Path, redis_url: str, key_prefix: str, every_cpu_busy: None
) -> None:
    tree = tmp_path / "tree"
    for package in ("cache", "store"):
        shutil.copytree(ROOT / "sluice" / package, tree / package)
    env = service_env(tmp_path, SLUICE_REDIS_URL=redis_url, SLUICE_KEY_PREFIX=key_prefix)
    cold = run_sluice("analyze", str(tree), env=env)
    assert cold.returncode == 0, cold.stderr
    assert _summary_calls(cold.stdout) > 0
    warm = run_sluice("analyze", str(tree), env=env)
    assert warm.returncode == 0, warm.stderr
    assert _summary_calls(warm.stdout) == 0, warm.stdout
    stats = run_sluice("cache", "stats", env=env)
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"l2 lost writes\s*│\s*0\b", stats.stdout), stats.stdout
