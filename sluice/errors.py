"""The sluice exception hierarchy.

Every public entry point raises a subclass of :class:`SluiceError` with a message a user can act on
(and no secret in it); the CLI prints that message on one line and exits non-zero instead of showing
a traceback.
"""

from __future__ import annotations

from typing import Any

from sluice.redaction import redact


class SluiceError(Exception):
    """Base class of every error sluice raises on purpose.

    Its message is redacted when the error is made (:func:`sluice.redaction.redact`), so a password
    in a URL it quotes never reaches a terminal, a log or a dead-letter entry.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigurationError(SluiceError):
    """A setting is missing or malformed (the message names the variable and the bad value)."""


class InvalidInput(SluiceError, ValueError):
    """A caller passed an argument sluice cannot work with."""


class BackendUnavailable(SluiceError):
    """A service (Redis, the database, the broker) could not be reached or failed mid-operation."""


class BackendTimeout(BackendUnavailable):
    """A service did not answer in time: it may be slow rather than down (callers may retry)."""


class CodecError(SluiceError):
    """A stored value could not be encoded or decoded (never executed: there is no pickle)."""


class ProviderError(SluiceError):
    """An AI provider call failed after its retries; the message never contains the API key."""


class TaskFailed(SluiceError):
    """A task failed after all its retries; it is in the dead-letter queue (see ``sluice dlq``)."""


class RetryLater(SluiceError):
    """Not now, but not a failure: run the task again in ``wait_seconds`` (a rate limit, a paused
    provider, a budget window). The task layer re-publishes the message with that countdown, keeping
    its priority, and the attempt does not count toward ``max_retries`` nor lead to a dead letter."""

    def __init__(self, wait_seconds: float, reason: str) -> None:
        super().__init__(f"retry in {wait_seconds:.3g}s: {reason}")
        self.wait_seconds = float(wait_seconds)
        self.reason = reason
