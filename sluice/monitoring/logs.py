"""Structured logs and secret redaction.

``SLUICE_LOG_FORMAT=json`` makes every handler write one JSON object per line (time, level, logger,
message, process, exception, and any ``extra=`` fields). Whatever the format, :class:`RedactFilter`
removes secrets before a record reaches a handler: passwords in URLs, bearer tokens and
``key=value`` credentials, OpenAI-style keys, and the exact values of the secrets sluice is
configured with (API keys, CDN tokens), so a secret echoed in an exception message is caught too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sluice.redaction import MASK, redact
from sluice.settings import LOG_FORMATS as FORMATS
from sluice.settings import SECRET_VARIABLES, load_log_format, load_secrets

__all__ = [
    "FORMATS",
    "MASK",
    "SECRET_VARIABLES",
    "JSONFormatter",
    "RedactFilter",
    "configure_handlers",
    "configure_logging",
    "configured_secrets",
    "log_format",
    "redact",
]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def configured_secrets() -> tuple[str, ...]:
    """The secret values set in this process's environment (short ones ignored: too ambiguous)."""
    return load_secrets()


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message, arguments and exception text, in place."""

    def __init__(self, secrets: Iterable[str] | None = None) -> None:
        super().__init__()
        self.secrets = tuple(secrets) if secrets is not None else configured_secrets()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
            record.exc_info = None  # formatters would otherwise render the unredacted original
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` fields are included as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str)


def log_format() -> str:
    """``SLUICE_LOG_FORMAT`` (``text`` or ``json``), validated."""
    return load_log_format()


def configure_handlers(handlers: Iterable[logging.Handler]) -> None:
    """Give each handler the redaction filter (once) and, for ``json``, the JSON formatter."""
    json_format = log_format() == "json"
    for handler in handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
        if json_format:
            handler.setFormatter(JSONFormatter())


def configure_logging() -> None:
    """Apply :func:`configure_handlers` to the root logger's handlers (call after ``basicConfig``)."""
    configure_handlers(logging.getLogger().handlers)
