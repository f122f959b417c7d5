"""What every ``sluice`` command shares: errors as one line, never a traceback; subcommands loaded
only when run; output that text from the code under review cannot forge or break; signals that stop
a command cleanly."""

from __future__ import annotations

import importlib
import signal
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from sluice.errors import InvalidInput, SluiceError


class _SluiceErrorExit(click.ClickException):
    """Exit status 1: a service, setting or task problem."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {printable(self.format_message())}", err=True)


class _InvalidInputExit(_SluiceErrorExit):
    """Exit status 2: the command line or its input is wrong."""

    exit_code = 2


class SluiceGroup(click.Group):
    """A group whose commands report :class:`SluiceError` as ``Error: <message>`` and exit 1 (2 for
    bad input). Nested groups need not repeat it: errors pass up through the top group's invoke.

    ``lazy`` maps a subcommand name to ``("module:attribute", "short help")``: the module is imported
    only when that subcommand runs, so ``sluice --help`` and every other command start fast.
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SluiceError as exc:
            kind = _InvalidInputExit if isinstance(exc, InvalidInput) else _SluiceErrorExit
            raise kind(str(exc)) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, with lazy commands described without importing them."""
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, self.lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


#: Characters shown as escapes: controls (a terminal obeys them) and bidirectional overrides (they
#: reorder what a reader sees, as in "Trojan Source").
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control or bidi-override character as a visible escape (``\\x1b``)."""
    out = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif char in _BIDI or (unicodedata.category(char) in ("Cc", "Cs") and char != "\t"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


class SafeConsole(Console):
    """A rich console for text that may come from the code under review: no markup is parsed (a
    ``[/x]`` in a file is just text, ``:smile:`` is not an emoji) and control characters are shown
    as escapes. Style with
    ``style=`` or :class:`rich.text.Text`, never with markup."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("highlight", False)
        super().__init__(markup=False, emoji=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        return super().render_str(printable(text, keep_newlines=True), **kwargs)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives; ``exit_code`` is ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: Seconds after a stop signal at which it is raised again if the first raise was lost.
REDELIVER_AFTER = 0.05


@contextmanager
def stop_signals_interrupt(
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted`; later ones are ignored, so the
    cleanup the first one starts (stopping workers) is never cut short.

    An exception a signal handler raises is lost when the handler runs inside a weakref callback
    or ``__del__`` (Python prints "Exception ignored in" and goes on): a stop signal then did not
    stop the run. So the handler also arms a timer, and while no :class:`Interrupted` is being
    handled the timer raises it again. The lost one is not printed as a traceback either: the
    command ends with its one-line message, as for a signal that was not lost.
    """
    received: int | None = None

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal received
        if received is None:
            received = signum
            signal.setitimer(signal.ITIMER_REAL, REDELIVER_AFTER)
            raise Interrupted(signum)

    def redeliver(signum: int, frame: Any) -> None:
        assert received is not None
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_AFTER)
        if not isinstance(sys.exc_info()[1], Interrupted):  # lost: not being handled anywhere
            raise Interrupted(received)

    unraisable = sys.unraisablehook

    def quiet_when_lost(dropped: Any) -> None:
        if not isinstance(dropped.exc_value, Interrupted):  # raised again by the timer
            unraisable(dropped)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, redeliver)
    sys.unraisablehook = quiet_when_lost
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = unraisable
    if received is not None:  # lost, and the body finished before the timer fired
        raise Interrupted(received)
