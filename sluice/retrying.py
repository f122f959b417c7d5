"""Retry timing shared by every caller of a remote service: backoff with jitter and ``Retry-After``.

One place decides how long to wait, so the AI providers, the CDN purge providers and task retries
agree: :func:`backoff_with_jitter` ("equal jitter": at least half the exponential delay, so a retry
never comes instantly, plus a random other half, so workers failing together do not retry in
lock-step) and :func:`parse_retry_after` (seconds, an HTTP date, or OpenAI's ``retry-after-ms``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limiting and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: The longest wait a server's ``Retry-After`` may impose; longer (absurd) values are capped.
MAX_RETRY_AFTER = 300.0


def backoff_with_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): ``min(cap, base * 2**attempt)``
    with equal jitter, i.e. uniformly in ``[ceiling / 2, ceiling]``."""
    if attempt < 0 or base < 0 or cap < 0:
        raise ValueError(f"need attempt, base and cap >= 0, got {attempt!r}, {base!r}, {cap!r}")
    # 2**attempt overflows a float past ~1024; the cap is long reached by then.
    ceiling = min(cap, base * 2 ** min(attempt, 64))
    return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(
    headers: Mapping[str, str],
    now: datetime | None = None,
    cap: float = MAX_RETRY_AFTER,
) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nonsense).

    Reads ``retry-after-ms`` first (OpenAI's, more precise), then ``Retry-After`` as seconds or an
    HTTP date (a date in the past means 0). ``headers`` must look names up case-insensitively, as
    ``httpx.Headers`` does. A malformed value is logged and ignored; a value above ``cap`` (a
    server asking for hours) is logged and capped, so one bad header cannot park work for a day.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        milliseconds = _non_negative(raw_ms)
        if milliseconds is not None:
            return _capped(milliseconds / 1000, raw_ms, cap)
        log.warning("ignoring a malformed retry-after-ms header: %r", raw_ms[:100])
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _non_negative(raw)
    if seconds is None:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            log.warning("ignoring a malformed Retry-After header: %r", raw[:100])
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return _capped(seconds, raw, cap)


def _capped(seconds: float, raw: str, cap: float) -> float:
    if seconds > cap:
        log.warning("Retry-After %r asks for %.0fs; capping it at %.0fs", raw[:100], seconds, cap)
        return cap
    return seconds


def _non_negative(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
