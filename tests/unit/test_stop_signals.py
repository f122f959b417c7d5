"""A stop signal always stops ``sluice analyze``, even when its exception is raised where Python
drops exceptions (a weakref callback, ``__del__``): CI once saw SIGINT end a run with exit 0."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sluice.clitools import Interrupted, stop_signals_interrupt


class _Finalised:
    def __init__(self, on_del: Callable[[], None]) -> None:
        self.on_del = on_del

    def __del__(self) -> None:
        self.on_del()


def _signal_inside_weakref_callback(sig: int) -> None:
    class Key:
        pass

    key = Key()
    weakref.finalize(key, os.kill, os.getpid(), sig)  # the handler runs inside the callback
    holder = weakref.WeakKeyDictionary({key: 1})
    del key
    assert not holder


def _signal_inside_del(sig: int) -> None:
    _Finalised(lambda: os.kill(os.getpid(), sig))
    gc.collect()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize(
    "lost_in", [_signal_inside_weakref_callback, _signal_inside_del], ids=["weakref", "__del__"]
)
@pytest.mark.parametrize("body", ["keeps running", "finishes at once"])
def test_a_stop_signal_whose_exception_is_lost_is_raised_again(
    sig: signal.Signals,
    lost_in: Callable[[int], None],
    body: str,
) -> None:
    reported: list[object] = []  # what Python would print as "Exception ignored in ... Traceback"
    started = time.monotonic()
    with (
        _unraisable_recorded(reported),
        pytest.raises(Interrupted) as caught,
        stop_signals_interrupt(),
    ):
        lost_in(sig)
        if body == "keeps running":
            while time.monotonic() - started < 5:
                time.sleep(0.01)
    assert caught.value.exit_code == 128 + sig
    assert time.monotonic() - started < 2  # raised again within moments, not after the work
    assert reported == []  # the command's one-line message is all the user sees


@contextmanager
def _unraisable_recorded(reported: list[object]) -> Iterator[None]:
    before = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        yield
    finally:
        sys.unraisablehook = before


def test_other_exceptions_python_drops_are_still_reported() -> None:
    reported: list[Any] = []
    with _unraisable_recorded(reported), stop_signals_interrupt():
        _Finalised(lambda: 1 / 0)
        gc.collect()
    assert [type(r.exc_value) for r in reported] == [ZeroDivisionError]


def test_cleanup_after_a_stop_signal_is_never_cut_short() -> None:
    """While the first Interrupted is being handled (workers stopping), neither a second signal
    nor the redelivery timer raises another."""
    cleaned = []
    with pytest.raises(Interrupted), stop_signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # several redelivery periods
            cleaned.append(True)
            raise
    assert cleaned == [True]


def test_no_signal_no_interrupt_and_handlers_restored() -> None:
    hooks = lambda: (  # noqa: E731
        signal.getsignal(signal.SIGINT),
        signal.getsignal(signal.SIGALRM),
        sys.unraisablehook,
    )
    before = hooks()
    with stop_signals_interrupt():
        assert hooks() != before
    assert hooks() == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
