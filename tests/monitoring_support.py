"""Helpers (no tests) shared by the monitoring integration tests: environment, workers, `sluice serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, service_env, stop_processes

HANDLERS = """
import time
from sluice.workers import Priority, TaskHandler, registry


class Echo(TaskHandler):
    priority = Priority.HIGH

    @property
    def task_name(self):
        return "mon_echo"

    def execute(self, payload):
        time.sleep(payload.get("sleep", 0.02))
        return {"echo": payload.get("n")}


class Broken(TaskHandler):
    priority = Priority.NORMAL
    max_retries = 0

    @property
    def task_name(self):
        return "mon_broken"

    def execute(self, payload):
        raise RuntimeError("broken on purpose")


registry.register(Echo())
registry.register(Broken())
"""


def monitoring_env(
    tmp_path: Path,
    redis_url: str,
    broker_url: str,
    key_prefix: str,
    database_url: str,
    **extra: str,
) -> dict[str, str]:
    """Every sluice service on Redis and PostgreSQL, with the test handlers importable."""
    (tmp_path / "mon_handlers.py").write_text(HANDLERS)
    return service_env(
        tmp_path,
        SLUICE_BROKER_URL=broker_url,
        SLUICE_RESULT_BACKEND=broker_url,
        SLUICE_REDIS_URL=redis_url,
        SLUICE_KEY_PREFIX=key_prefix,
        SLUICE_DATABASE_URL=database_url,
        SLUICE_HANDLER_MODULES="mon_handlers",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        **extra,
    )


def start_worker(env: dict[str, str], log_file: Path, queues: str) -> subprocess.Popen[bytes]:
    """A prefork worker (two children) that also imports the monitoring signal receivers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sluice",
            "worker",
            "--include",
            "sluice.monitoring.signals",
            "-Q",
            queues,
            "-c",
            "2",
            "-n",
            f"mon-{uuid.uuid4().hex[:8]}@%h",
            "-f",
            str(log_file),
            "--loglevel",
            "INFO",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (log_file.exists() and " ready." in log_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_processes(process)
            raise RuntimeError(f"worker did not start: {log_file.read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`sluice serve --port 0`; returns the process and its base URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        stop_processes(process)
        raise RuntimeError(f"sluice serve did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    """Status and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get_json(url: str) -> tuple[int, Any]:
    status, body = get(url)
    return status, json.loads(body)
