"""JSON logs and secret redaction: no API key or password survives into a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sluice.errors import ConfigurationError
from sluice.monitoring.logs import (
    JSONFormatter,
    RedactFilter,
    configure_handlers,
    log_format,
    redact,
)

API_KEY = "sk-proj-abcdefghijklmnopqrstuvwx"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connecting to redis://user:s3cretpw@cache:6379/1", "s3cretpw"),
        ("postgresql+psycopg://postgres:pgpass99@db/test failed", "pgpass99"),
        ("headers {'Authorization': 'Bearer abc.def.ghi'}", "abc.def.ghi"),
        ("calling with api_key=AKIA1234567890", "AKIA1234567890"),
        ('{"api-key": "zzzz-yyyy"}', "zzzz-yyyy"),
        ("token: tok_live_123456", "tok_live_123456"),
        ("password=hunter2&user=bob", "hunter2"),
        (f"provider said: invalid key {API_KEY}", API_KEY),
    ],
)
def test_redact_patterns(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_configured_secret_values_are_masked_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_CDN_FASTLY_API_TOKEN", "plainvalue42")
    stream = io.StringIO()
    logger = logging.getLogger("sluice.test.redaction")
    handler = logging.StreamHandler(stream)
    configure_handlers([handler])
    logger.addHandler(handler)
    try:
        logger.warning(
            "purge failed with %s", "plainvalue42 rejected", extra={"note": "plainvalue42"}
        )
        try:
            raise RuntimeError(f"bad credentials {API_KEY}")
        except RuntimeError:
            logger.exception("provider error")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "plainvalue42" not in output and API_KEY not in output
    assert "purge failed with *** rejected" in output
    assert "RuntimeError: bad credentials ***" in output


def test_json_lines_carry_message_exception_and_extra_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    configure_handlers([handler])
    assert isinstance(handler.formatter, JSONFormatter)
    logger = logging.getLogger("sluice.test.json")
    logger.addHandler(handler)
    try:
        logger.error(
            "task %s dead-lettered",
            "abc-123",
            extra={"task_id": "abc-123", "dsn": "redis://:pw123456@x/0"},
        )
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    first, second = (
        json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")
    )
    assert first["message"] == "task abc-123 dead-lettered"
    assert first["level"] == "ERROR" and first["logger"] == "sluice.test.json"
    assert first["task_id"] == "abc-123"
    assert first["dsn"] == "redis://:***@x/0"
    assert "ZeroDivisionError" in second["exception"]


def test_filter_is_added_once() -> None:
    handler = logging.NullHandler()
    configure_handlers([handler])
    configure_handlers([handler])
    assert sum(isinstance(f, RedactFilter) for f in handler.filters) == 1


def test_log_format_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="SLUICE_LOG_FORMAT"):
        log_format()
    monkeypatch.delenv("SLUICE_LOG_FORMAT")
    assert log_format() == "text"


def test_slow_query_log_names_its_fingerprint(caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import create_engine

    from sluice.query import QueryOptimizer

    optimizer = QueryOptimizer(create_engine("sqlite://"), slow_threshold_ms=0)
    with caplog.at_level(logging.WARNING, logger="sluice.query"):
        optimizer.execute_query_sync("SELECT 1 AS one", use_cache=False)
    optimizer.close()
    fingerprints = [s.fingerprint for s in optimizer.slow_query_analyzer.stats()]
    assert any(fp in r.getMessage() for r in caplog.records for fp in fingerprints)
