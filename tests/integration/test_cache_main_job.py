"""The main job through the cache: a second `sluice analyze` of an unchanged tree calls no provider."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, run_sluice, service_env

pytestmark = pytest.mark.integration


def _summary(stdout: str) -> tuple[int, int, int]:
    """(provider calls, cache hits, hit rate %) from the run's summary table."""
    calls = re.search(r"provider calls\s*│\s*(\d+)", stdout)
    hits = re.search(r"cache hits\s*│\s*(\d+) \((\d+)%\)", stdout)
    assert calls and hits, stdout
    return int(calls.group(1)), int(hits.group(1)), int(hits.group(2))


def _analyze_twice(env: dict[str, str]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    first = run_sluice("analyze", str(EXAMPLES), env=env)
    assert first.returncode == 0, first.stderr
    second = run_sluice("analyze", str(EXAMPLES), env=env)
    assert second.returncode == 0, second.stderr
    return _summary(first.stdout), _summary(second.stdout)


def test_second_embedded_run_makes_zero_provider_calls_and_cli(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    (calls1, _, _), (calls2, hits2, rate2) = _analyze_twice(env)
    assert calls1 > 0
    assert calls2 == 0 and hits2 == calls1 and rate2 == 100

    stats = run_sluice("cache", "stats", env=env)
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"ai calls saved\s*│\s*[1-9]", stats.stdout), stats.stdout
    assert re.search(r"analysis\s*│\s*\d+\s*│\s*\d+\s*│\s*\d+\s*│\s*[1-9]", stats.stdout)

    cleared = run_sluice("cache", "clear", "--type", "analysis", env=env)
    assert cleared.returncode == 0 and "cleared cached analysis" in cleared.stdout
    third = run_sluice("analyze", str(EXAMPLES), env=env)
    assert _summary(third.stdout)[0] == calls1  # everything recomputed after the clear

    assert run_sluice("cache", "clear", env=env).returncode == 0
    bad = run_sluice("cache", "clear", "--type", "bogus", env=env)
    assert bad.returncode == 2 and "bogus" in bad.stderr


def test_second_run_on_redis_makes_zero_provider_calls(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    env = service_env(tmp_path, SLUICE_REDIS_URL=redis_url, SLUICE_KEY_PREFIX=key_prefix)
    (calls1, _, _), (calls2, hits2, rate2) = _analyze_twice(env)
    assert calls1 > 0 and calls2 == 0 and hits2 == calls1 and rate2 == 100
    stats = run_sluice("cache", "stats", env=env)
    assert stats.returncode == 0 and re.search(r"cluster-wide\s*│\s*True", stats.stdout)
