"""The robustness contract every public entry point keeps, whatever it is given: it returns a clean
result or raises a :class:`~sluice.errors.SluiceError` with a message, within a time limit. Never
another exception, never a hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sluice.errors import SluiceError

#: Seconds one case may take; a case that takes longer is a hang.
CASE_TIMEOUT = 10.0
#: Example counts: modest and fixed, so CI time stays predictable (reported in the closing note).
EXAMPLES = 200


class Outcome:
    """What one call did: ``value`` when it returned, ``error`` (a SluiceError) when it refused."""

    def __init__(self, value: Any = None, error: SluiceError | None = None) -> None:
        self.value = value
        self.error = error


def keeps_contract(call: Callable[[], Any], timeout: float = CASE_TIMEOUT) -> Outcome:
    """Run ``call`` on a thread of its own; fail the test on a hang or a non-Sluice exception."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["exception"] = exc

    thread = threading.Thread(target=run, daemon=True, name="robustness-case")
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"hang: no answer within {timeout:g} s"
    exc = box.get("exception")
    if exc is None:
        return Outcome(value=box.get("value"))
    if not isinstance(exc, SluiceError):
        raise AssertionError(f"{type(exc).__name__} instead of a SluiceError: {exc!r}") from exc
    assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
    return Outcome(error=exc)
