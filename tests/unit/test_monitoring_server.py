"""`/health` (concurrent, bounded checks), `/metrics`, `/stats` over real HTTP, and `sluice stats`."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from sluice.monitoring import health, server, stats
from sluice.monitoring.cli import stats as stats_command


def ok() -> str:
    return "fine"


def broken() -> str:
    raise ConnectionError("refused")


def test_checks_run_concurrently_and_a_hung_one_fails_at_the_deadline() -> None:
    release = threading.Event()

    def hangs() -> str:
        release.wait(30)
        return "late"

    started = time.monotonic()
    results = health.run_checks({"a": ok, "b": hangs, "c": broken, "d": ok}, timeout=0.3)
    elapsed = time.monotonic() - started
    release.set()
    assert [name for name, r in results.items() if r.ok] == ["a", "d"]
    assert "no answer within 0.3 s" in results["b"].detail
    assert results["c"].detail == "ConnectionError: refused"
    assert elapsed < 10  # generous: the point is that it did not wait 30 s for "hangs"


def test_failure_details_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky() -> str:
        raise ConnectionError("cannot reach redis://:hunter2secret@db:6379/0")

    result = health.run_checks({"store": leaky}, timeout=1)["store"]
    assert "hunter2secret" not in result.detail
    assert "redis://:***@db" in result.detail


@pytest.fixture
def base_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(health, "CHECKS", {"broker": ok, "store": ok, "database": ok})
    monkeypatch.setattr(stats, "SECTIONS", {"cache": lambda: {"hits": 1}, "cdn": broken})
    httpd = server.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_health_is_200_when_every_check_passes(base_url: str) -> None:
    status, kind, body = fetch(base_url + "/health")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body)["status"] == "ok"


def test_health_is_503_naming_the_failed_component(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECKS", {"broker": ok, "database": broken})
    status, _, body = fetch(base_url + "/health")
    report = json.loads(body)
    assert status == 503
    assert report["failed"] == ["database"]
    assert report["checks"]["database"]["status"] == "fail"


def test_metrics_stats_and_unknown_paths(base_url: str) -> None:
    status, kind, body = fetch(base_url + "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    assert "sluice_metrics_source_up" in body
    status, _, body = fetch(base_url + "/stats")
    assert status == 200
    assert json.loads(body) == {
        "cache": {"hits": 1},
        "cdn": {"error": "ConnectionError: refused"},
    }
    assert fetch(base_url + "/nope")[0] == 404


def test_stats_command_prints_tables_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"cache": {"global": {"hit_rate": 0.8333}}, "queue": {"pending": 3}}
    monkeypatch.setattr(stats, "collect_stats", lambda: report)
    as_json = CliRunner().invoke(stats_command, ["--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == report
    tables = CliRunner().invoke(stats_command, [])
    assert tables.exit_code == 0
    assert "global.hit_rate" in tables.output and "0.8333" in tables.output
    assert "pending" in tables.output


def _raw(base_url: str, request: bytes) -> bytes:
    import socket

    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET nothing HTTP/1.1\r\n\r\n", b"400"),
        (b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"\xff\xfe /health HTTP/1.1\r\n\r\n", b"405"),
    ],
)
def test_malformed_requests_get_an_error_status_not_a_hang(
    base_url: str, request_bytes: bytes, status: bytes
) -> None:
    assert _raw(base_url, request_bytes).startswith(b"HTTP/1.1 " + status)


def test_head_sends_headers_only(base_url: str) -> None:
    response = _raw(base_url, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head and body == b""


def test_a_request_head_never_finished_is_closed_at_the_read_timeout() -> None:
    import socket

    httpd = server.MonitoringServer("127.0.0.1", 0, read_timeout=0.2)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", httpd.server_address[1]), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert sock.recv(1024) == b""  # closed by the server, not by this 30 s timeout
    finally:
        httpd.shutdown()
        httpd.server_close()
