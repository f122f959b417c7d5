"""The one Retry-After parser and the one backoff-with-jitter helper every retrying caller uses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.retrying import MAX_RETRY_AFTER, backoff_with_jitter, parse_retry_after

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    "given_headers,expected",
    [
        (headers(retry_after="2.5"), 2.5),
        (headers(retry_after=" 7 "), 7.0),
        (headers(retry_after="0"), 0.0),
        (httpx.Headers({"Retry-After": "4"}), 4.0),  # any header-name case
        (headers(retry_after=format_datetime(NOW + timedelta(seconds=30), usegmt=True)), 30.0),
        (headers(retry_after=format_datetime(NOW - timedelta(seconds=30), usegmt=True)), 0.0),
        (headers(retry_after_ms="150"), 0.15),
        (headers(retry_after_ms="150", retry_after="9"), 0.15),  # the precise one wins
        (headers(retry_after_ms="soon", retry_after="9"), 9.0),  # a bad ms falls back
        (headers(), None),
    ],
)
def test_parses_every_form(given_headers: httpx.Headers, expected: float | None) -> None:
    assert parse_retry_after(given_headers, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "raw", ["soon", "", "-5", "nan", "inf", "1e", "Mon, 99 Foo 2026", "12:00", "0x10"]
)
def test_malformed_values_are_ignored_and_logged(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.retrying")
    assert parse_retry_after(headers(retry_after=raw), NOW) is None
    assert parse_retry_after(headers(retry_after_ms=raw), NOW) is None
    assert any("malformed" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "given_headers",
    [
        headers(retry_after="7200"),
        headers(retry_after_ms=str(3 * 3600 * 1000)),
        headers(retry_after=format_datetime(NOW + timedelta(hours=5), usegmt=True)),
        headers(retry_after="1e300"),
    ],
)
def test_absurd_values_are_capped_and_logged(
    given_headers: httpx.Headers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.retrying")
    assert parse_retry_after(given_headers, NOW) == MAX_RETRY_AFTER
    assert parse_retry_after(given_headers, NOW, cap=5) == 5
    assert any("capping" in record.getMessage() for record in caplog.records)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_never_raises_and_stays_in_bounds(raw: str) -> None:
    for name in ("retry-after", "retry-after-ms"):
        wait = parse_retry_after({name: raw}, NOW)
        assert wait is None or 0 <= wait <= MAX_RETRY_AFTER


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(0, 5000),
    base=st.floats(0, 100, allow_nan=False),
    cap=st.floats(0, 1000, allow_nan=False),
)
def test_backoff_is_within_half_and_whole_of_the_capped_exponential(
    attempt: int, base: float, cap: float
) -> None:
    ceiling = min(cap, base * 2 ** min(attempt, 64))
    delay = backoff_with_jitter(attempt, base, cap)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_jitters() -> None:
    assert len({backoff_with_jitter(3, 1.0, 100.0) for _ in range(50)}) > 1


@pytest.mark.parametrize("args", [(-1, 1.0, 1.0), (0, -1.0, 1.0), (0, 1.0, -1.0)])
def test_backoff_refuses_negative_arguments(args: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError):
        backoff_with_jitter(*args)


def test_one_parser_and_one_jitter_formula_in_the_code_base() -> None:
    """The AI providers, the CDN purge providers and task retries all use these helpers."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sluice"
    users = {"ai/openai.py", "cdn/providers.py", "workers/task.py"}
    for relative in users:
        text = (root / relative).read_text()
        assert "sluice.retrying import" in text, relative
        assert "random." not in text, relative
    for path in root.rglob("*.py"):
        if path.name != "retrying.py":
            assert "parsedate_to_datetime" not in path.read_text(), path
