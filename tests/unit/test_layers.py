"""The import-linter contract (``.importlinter``): kept by the code, broken by an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "sluice", tmp_path / "sluice", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_repository_keeps_its_layers() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("sluice/workers/stats.py", "sluice.monitoring.recorder"),  # a metric recorded upward
        ("sluice/query/slow_queries.py", "sluice.monitoring.recorder"),
        ("sluice/workers/handlers.py", "sluice.analysis.service"),  # workers knowing the main job
        ("sluice/store/base.py", "sluice.workers.priority"),
        ("sluice/cache/keys.py", "sluice.cli"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path: Path, importer: str, imported: str) -> None:
    root = copy_tree(tmp_path)
    with (root / importer).open("a") as module:
        module.write(f"\nimport {imported}  # noqa: E402\n")
    done = lint(root)
    assert done.returncode != 0
    module_name = importer.removesuffix(".py").replace("/", ".")
    assert f"{module_name} -> {imported}" in done.stdout, done.stdout


def test_an_import_cycle_inside_a_package_breaks_the_contract(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    # the circle that used to be: the dead-letter queue publishing through the task module
    with (root / "sluice/workers/deadletter.py").open("a") as module:
        module.write("\nimport sluice.workers.task  # noqa: E402\n")
    done = lint(root)
    assert done.returncode != 0
    assert "No cycles are allowed in sluice.workers" in done.stdout, done.stdout


def test_monitoring_hears_queries_through_the_hook_without_an_upward_import() -> None:
    from importlib.metadata import entry_points

    from sluice import hooks
    from sluice.monitoring import recorder

    points = {p.value for p in entry_points(group=hooks.ENTRY_POINT_GROUP)}
    assert "sluice.monitoring.hooks:install" in points
    heard: list[tuple[object, ...]] = []

    def listen(*event: object) -> None:
        heard.append(event)

    hooks.on_query(listen)
    try:
        hooks.query_finished(0.25, None, True)
    finally:
        hooks._query_observers.remove(listen)
    assert heard == [(0.25, None, True)]
    assert recorder.observe_query in hooks._query_observers  # installed by the entry point


def test_a_failing_observer_never_breaks_the_query() -> None:
    from sluice import hooks

    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    hooks.on_query(broken)
    try:
        hooks.query_finished(0.01, None, False)  # must not raise
    finally:
        hooks._query_observers.remove(broken)
