"""The README's test command on a fresh machine: a tool or extension that only ``.ci/run`` installs
makes its tests skip with the reason, never error; ``SLUICE_REQUIRE_SERVICES=1`` makes them fail.

HypoPG is hidden from the tests' own detection (``SLUICE_TEST_HIDE_EXTENSIONS``), the same function
that looks at the real server, so this runs on a machine where the extension is installed too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

#: The README's test command is ``pytest``; these are the parts of it that need HypoPG.
MODULES = [
    "tests/integration/test_query_postgres.py",
    "tests/integration/test_query_workload_postgres.py",
]
HYPOPG_TESTS = "validated_with_hypopg or weighs_advice_by_calls"


def _readme_pytest(require_services: bool, postgres_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_TEST_HIDE_EXTENSIONS"] = "hypopg"
    for name in ("SLUICE_TEST_REDIS_URL", "SLUICE_TEST_DATABASE_URL"):
        if name in os.environ:
            env[name] = os.environ[name]
    if require_services:
        env["SLUICE_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider", *MODULES,
         "-k", HYPOPG_TESTS],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _summary(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_without_hypopg_the_readme_command_skips_with_the_reason(postgres_url: str) -> None:
    result = _readme_pytest(require_services=False, postgres_url=postgres_url)
    counts = _summary(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert counts.get("skipped") == 2 and "error" not in counts and "errors" not in counts
    assert "HypoPG extension is not installed" in result.stdout


def test_ci_turns_the_missing_hypopg_into_a_failure(postgres_url: str) -> None:
    result = _readme_pytest(require_services=True, postgres_url=postgres_url)
    counts = _summary(result.stdout)
    assert result.returncode == 1
    # pytest.fail in a fixture is reported as an error at setup: the run fails either way.
    failures = sum(counts.get(word, 0) for word in ("failed", "error", "errors"))
    assert failures == 2 and "skipped" not in counts
    assert "SLUICE_REQUIRE_SERVICES=1 but the HypoPG extension" in result.stdout


def test_the_detection_sees_the_real_server(postgres_url: str) -> None:
    """Without the simulation, detection asks the server itself (installed here by .ci/run)."""
    from tests.conftest import postgres_extension_available

    assert postgres_extension_available(postgres_url, "plpgsql")
    assert not postgres_extension_available(postgres_url, "no_such_extension_xyz")
