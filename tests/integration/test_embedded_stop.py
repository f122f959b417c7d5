"""Stopping ``sluice analyze`` on embedded defaults: no orphan worker, nothing half-written, nothing lost.

The files go through the OpenAI-compatible provider against a loopback fake with a fixed latency, so
a run lasts long enough for a signal to land in the middle of it (the hosted model cannot run here).
Each drill prints its counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from sluice.workers.embedded import EmbeddedWorker
from tests.conftest import ROOT, service_env
from tests.fake_openai import KEY, running_fake_openai
from tests.worker_fixtures import wait_for

FILES = 24
#: The issue's bound: no process of the run outlives the command by more than this.
OUTLIVE_BOUND = 2.0


def _tree(root: Path) -> Path:
    for i in range(FILES):
        (root / f"mod{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"mod{i}.py").write_text(f"def run_{i}(cmd):\n    return eval(cmd)  # {i}\n")
    return root


@pytest.fixture
def drill_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with running_fake_openai(latency=0.25) as fake:
        yield service_env(
            tmp_path,
            SLUICE_AI_PROVIDER="openai",
            SLUICE_AI_BASE_URL=fake.url,
            SLUICE_AI_API_KEY=KEY,
            SLUICE_AI_MODEL="gpt-4o-mini",
        )


def _counts(data_dir: Path) -> tuple[int, int, int]:
    """(files analysed, files whose stored findings disagree with their count, dead letters) of the
    newest session."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sluice.db'}")
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("analyzed_files"):
                return 0, 0, 0
            session = conn.execute(sa.text("SELECT max(id) FROM analysis_sessions")).scalar()
            analysed = conn.execute(
                sa.text("SELECT count(DISTINCT path) FROM analyzed_files WHERE session_id = :s"),
                {"s": session},
            ).scalar()
            torn = conn.execute(
                sa.text(
                    "SELECT count(*) FROM analyzed_files f WHERE f.session_id = :s AND "
                    "f.findings_count != (SELECT count(*) FROM code_review_results r "
                    "WHERE r.session_id = f.session_id AND r.file_path = f.path)"
                ),
                {"s": session},
            ).scalar()
            dead = conn.execute(sa.text("SELECT count(*) FROM dead_letter_tasks")).scalar()
            return int(analysed or 0), int(torn or 0), int(dead or 0)
    except sa.exc.OperationalError:
        return 0, 0, 0  # a writer holds the database right now
    finally:
        engine.dispose()


def _status(data_dir: Path) -> str:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sluice.db'}")
    try:
        with engine.connect() as conn:
            query = "SELECT status FROM analysis_sessions ORDER BY id DESC LIMIT 1"
            return str(conn.execute(sa.text(query)).scalar())
    finally:
        engine.dispose()


def _start(env: dict[str, str], tree: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "analyze", str(tree), "--max-findings", "0"],
        env={**env, "COLUMNS": "200"}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _run_tree(command: subprocess.Popen[str]) -> list[psutil.Process]:
    """The command's worker and pool children, once all are up."""

    def workers() -> list[psutil.Process] | None:
        tree = psutil.Process(command.pid).children(recursive=True)
        return tree if len(tree) >= 3 else None  # worker main + 2 pool children

    return list(wait_for(workers, 60, "the embedded worker and its pool"))


def _finish_queued(env: dict[str, str], data_dir: Path) -> int:
    """What a later run does with what was left queued: a new worker drains it. Returns lost."""
    worker = EmbeddedWorker(2, data_dir / "logs" / "drain.log", env=env)
    worker.start()
    try:
        wait_for(lambda: sum(_counts(data_dir)[::2]) >= FILES, 120, "every file of the session")
    finally:
        worker.stop()
    analysed, _, dead = _counts(data_dir)
    return FILES - analysed - dead


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_run_and_its_worker(
    tmp_path: Path,
    drill_env: dict[str, str],
    sig: signal.Signals,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    command = _start(drill_env, _tree(tmp_path / "tree"))
    tree = _run_tree(command)
    wait_for(lambda: _counts(data_dir)[0] >= 2, 120, "the first files")
    command.send_signal(sig)
    _, err = command.communicate(timeout=30)
    gone_by = time.monotonic() + OUTLIVE_BOUND
    _, alive = psutil.wait_procs(tree, timeout=max(0.0, gone_by - time.monotonic()))
    survivors = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"still running {OUTLIVE_BOUND}s after the command: {survivors}"
    assert command.returncode == 128 + sig, err
    assert "interrupted" in err and "Traceback" not in err
    analysed, torn, _ = _counts(data_dir)
    assert torn == 0, "a file's findings were half-written"
    assert _status(data_dir) == "interrupted"
    lost = _finish_queued(drill_env, data_dir)
    with capsys.disabled():
        print(f"\ndrill {sig.name}: {analysed}/{FILES} analysed when stopped, lost {lost}")
    assert lost == 0
    assert _counts(data_dir)[1] == 0


def test_sigkill_of_the_embedded_worker_mid_task_loses_nothing(
    tmp_path: Path, drill_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded filesystem broker redelivers what a killed worker held, as Redis does."""
    data_dir = tmp_path / "data"
    command = _start(drill_env, _tree(tmp_path / "tree"))
    worker_main = next(p for p in _run_tree(command) if p.ppid() == command.pid)
    wait_for(lambda: _counts(data_dir)[0] >= 2, 120, "the first files")
    os.killpg(worker_main.pid, signal.SIGKILL)  # the worker and its pool, mid-task
    injected = f"SIGKILL of the embedded worker group at {_counts(data_dir)[0]}/{FILES} files"
    _, err = command.communicate(timeout=60)
    assert command.returncode == 1 and "embedded worker exited" in err, err
    lost = _finish_queued(drill_env, data_dir)
    analysed, torn, dead = _counts(data_dir)
    with capsys.disabled():
        print(f"\ndrill embedded-sigkill: injected {injected}; completed {analysed}, "
              f"dead-lettered {dead}, lost {lost}")  # fmt: skip
    assert (lost, torn, dead) == (0, 0, 0)


def test_a_killed_command_takes_its_worker_with_it(
    tmp_path: Path, drill_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL cannot be handled: the kernel's parent-death signal stops the worker and its pool."""
    data_dir = tmp_path / "data"
    command = _start(drill_env, _tree(tmp_path / "tree"))
    tree = _run_tree(command)
    wait_for(lambda: _counts(data_dir)[0] >= 2, 120, "the first files")
    command.kill()
    command.communicate(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=OUTLIVE_BOUND)
    survivors = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"orphans {OUTLIVE_BOUND}s after the command was killed: {survivors}"
    lost = _finish_queued(drill_env, data_dir)
    with capsys.disabled():
        print(f"\ndrill SIGKILL of the command: lost {lost}")
    assert lost == 0 and _counts(data_dir)[1] == 0
