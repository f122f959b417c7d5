"""``sluice serve`` under a crowd of scrapers and half-sent requests, on a real Redis broker with a
real worker: every request answered, the server responsive afterwards, its threads back to their
baseline. The figures (requests, p99 latency, threads) are printed for the closing note; nothing
asserts a wall-clock time."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess, service_env
from tests.worker_fixtures import wait_for

pytestmark = pytest.mark.integration

SCRAPES = 200


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def _get(url: str, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), time.monotonic() - started


class Serve:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])


@pytest.fixture
def serve(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str
) -> Iterator[Serve]:
    env = service_env(
        tmp_path,
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
        SLUICE_REDIS_URL=redis_url,
        SLUICE_KEY_PREFIX=key_prefix,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="normal", concurrency=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker.wait_ready()
        assert process.stderr is not None
        line = process.stderr.readline()
        url = re.search(r"http://\S+", line).group(0)  # type: ignore[union-attr]
        wait_for(lambda: _get(url + "/health", timeout=10)[0] == 200, 30, "a healthy server")
        for path in ("/metrics", "/stats"):
            # Each endpoint once: the cache's background threads start on first use, for good.
            assert _get(url + path, timeout=30)[0] == 200
        yield Serve(process, url)
    finally:
        process.terminate()
        process.wait(30)
        worker.stop()


def test_two_hundred_parallel_scrapes_are_answered_and_threads_return_to_baseline(
    serve: Serve,
) -> None:
    baseline = _threads(serve.process.pid)
    paths = ["/metrics", "/health", "/stats", "/health"] * (SCRAPES // 4)
    with ThreadPoolExecutor(max_workers=SCRAPES) as pool:
        outcomes = list(pool.map(lambda path: _get(serve.url + path), paths))
    statuses = [status for status, _, _ in outcomes]
    latencies = sorted(seconds for _, _, seconds in outcomes)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert statuses.count(200) == SCRAPES, statuses
    # Afterwards: responsive, and /health still sees the worker that is up.
    status, body, _ = _get(serve.url + "/health", timeout=30)
    assert status == 200, body
    assert json.loads(body)["checks"]["workers"]["status"] == "ok"
    after = wait_for(
        lambda: (n := _threads(serve.process.pid)) <= baseline and n, 30, "threads at baseline"
    )
    print(
        f"\nserve: {SCRAPES} parallel scrapes, {statuses.count(200)} answered 200, "
        f"p99 {p99 * 1000:.0f} ms, threads before {baseline} after {after}"
    )


def test_half_sent_requests_time_out_and_never_block_a_scrape(serve: Serve) -> None:
    baseline = _threads(serve.process.pid)
    hanging = []
    for _ in range(SCRAPES):
        sock = socket.create_connection(("127.0.0.1", serve.port), timeout=30)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        hanging.append(sock)
    try:
        status, _, seconds = _get(serve.url + "/metrics", timeout=30)
        assert status == 200  # answered while 200 connections dangle
        during = _threads(serve.process.pid)
        closed = 0
        for sock in hanging:
            sock.settimeout(60)
            try:
                closed += sock.recv(1024) is not None  # b"" (closed) or an error response
            except OSError:
                closed += 1  # reset by the server: timed out too
        assert closed == SCRAPES
    finally:
        for sock in hanging:
            sock.close()
    print(
        f"\nserve: {SCRAPES} half-sent requests all timed out; a scrape meanwhile took "
        f"{seconds * 1000:.0f} ms; threads before {baseline}, during {during}"
    )
    assert during <= baseline
