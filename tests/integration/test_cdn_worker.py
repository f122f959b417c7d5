"""The CDN beat tasks in a real `celery -A sluice worker` (prefork children are daemon processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_compress_static_in_prefork_worker(tmp_path: Path) -> None:
    from sluice.cdn.tasks import compress_static

    static = tmp_path / "static"
    static.mkdir()
    for index in range(4):
        (static / f"app{index}.js").write_text(f"const value{index} = 'x';\n" * 400)
    # Same data dir as this process, so the embedded broker and result backend are shared.
    env = {**os.environ, "SLUICE_CDN_STATIC_ROOT": str(static)}
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sluice",
            "worker",
            "--include",
            "sluice.cdn.tasks",
            "-Q",
            "critical,high,normal,low",
            "-c",
            "2",
            "-n",
            f"cdn-{os.getpid()}@%h",
            "-f",
            str(log),
            "--loglevel",
            "INFO",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and " ready." in log.read_text()):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        result = compress_static.apply_async(queue="low").get(timeout=120)
        assert result["compressed"] == 4, result
        assert all((static / f"app{i}.js.br").exists() for i in range(4))
        assert compress_static.apply_async(queue="low").get(timeout=120)["unchanged"] == 4
    finally:
        worker.terminate()
        worker.wait(30)
