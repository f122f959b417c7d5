"""Errors raised by the query optimizer, all part of the :class:`~sluice.errors.SluiceError` tree."""

from __future__ import annotations

from sluice.errors import InvalidInput


class QueryParameterError(InvalidInput):
    """The parameters do not match the statement's placeholders (the message names them)."""


class QueryExecutionError(InvalidInput):
    """The database rejected the statement; the message carries the database's own message."""
