"""What every ``sluice`` command group shares: errors as one line, never a traceback."""

from __future__ import annotations

from typing import Any

import click

from sluice.errors import InvalidInput, SluiceError


class _SluiceErrorExit(click.ClickException):
    """Exit status 1: a service, setting or task problem."""


class _InvalidInputExit(_SluiceErrorExit):
    """Exit status 2: the command line or its input is wrong."""

    exit_code = 2


class SluiceGroup(click.Group):
    """A group whose commands report :class:`SluiceError` as ``Error: <message>`` and exit 1 (2 for
    bad input). Nested groups need not repeat it: errors pass up through the top group's invoke."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SluiceError as exc:
            kind = _InvalidInputExit if isinstance(exc, InvalidInput) else _SluiceErrorExit
            raise kind(str(exc)) from exc
