"""Bind parameters to a statement written with ``$n`` (the guide's style) or ``:name`` placeholders.

``$n`` placeholders are found by a small lexer that skips string literals, quoted identifiers,
dollar-quoted bodies and comments, so a ``$1`` inside ``'...'`` is left alone. They are rewritten to
SQLAlchemy ``:name`` binds, which the driver then sends as real parameters: values never enter the
SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, text

from sluice.query.errors import QueryParameterError

Params = Mapping[str, Any] | Sequence[Any] | None

# SQLAlchemy's own rule for what ``text()`` treats as a bind; used to escape such colons that are
# not binds (inside literals) once ``$n`` placeholders have been turned into ``:p<n>``.
_TEXT_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_POSITIONAL = re.compile(r"\$(\d+)")
_INTERESTING = re.compile(r"['\"$]|--|/\*")


def positional_placeholders(sql: str) -> list[tuple[int, int, int]]:
    """Every ``$n`` placeholder outside literals and comments, as ``(start, end, n)``."""
    found: list[tuple[int, int, int]] = []
    i, size = 0, len(sql)
    while i < size:
        # Jump to the next character that can start a literal, a comment or a placeholder: a
        # megabyte of IN-list digits then costs one regular-expression scan.
        interesting = _INTERESTING.search(sql, i)
        if interesting is None:
            break
        i = interesting.start()
        char = sql[i]
        if char in "'\"":
            i = _skip_quoted(sql, i, char)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = size if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif char == "$":
            number = _POSITIONAL.match(sql, i)
            if number and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                found.append((i, number.end(), int(number.group(1))))
                i = number.end()
                continue
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                close = sql.find(tag.group(0), tag.end())
                i = size if close < 0 else close + len(tag.group(0))
            else:
                i += 1
        else:
            i += 1
    return found


def _skip_quoted(sql: str, start: int, quote: str) -> int:
    i = start + 1
    # E'...' strings may escape a quote with a backslash.
    backslash = quote == "'" and start > 0 and sql[start - 1] in "eE"
    while i < len(sql):
        if backslash and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if sql.startswith(quote * 2, i):  # a doubled quote is an escaped quote
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _skip_block_comment(sql: str, start: int) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):  # PostgreSQL nests block comments
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def bind(sql: str, params: Params = None) -> tuple[TextClause, dict[str, Any]]:
    """A ``text()`` clause and its parameters for ``sql``.

    With ``$n`` placeholders, ``params`` is a sequence (``$1`` is its first item) or a mapping whose
    values are taken in order (the guide passes ``{"owner_id": user_id}`` for ``$1``). With
    ``:name`` placeholders it is a mapping by name. Missing or unexpected parameters raise
    :class:`QueryParameterError` naming them.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryParameterError(f"the statement must be a non-empty string, got {sql!r}")
    if (params is not None and not isinstance(params, Mapping | Sequence)) or isinstance(
        params, str
    ):
        raise QueryParameterError(
            f"parameters must be a mapping or a sequence, got {type(params).__name__}"
        )
    positions = positional_placeholders(sql)
    if positions:
        return _bind_positional(sql, positions, params)
    clause = text(sql)
    expected = set(clause._bindparams)
    if params is not None and not isinstance(params, Mapping):
        if params and not expected:
            raise QueryParameterError(
                f"the statement has no placeholders but {len(params)} parameter(s) were given"
            )
        raise QueryParameterError(
            "positional parameters need $1, $2, ... placeholders; use a mapping for :name binds"
        )
    given = dict(params or {})
    _check_names(expected, set(given))
    return clause, given


def _bind_positional(
    sql: str, positions: list[tuple[int, int, int]], params: Params
) -> tuple[TextClause, dict[str, Any]]:
    values = list(params.values() if isinstance(params, Mapping) else params or ())
    numbers = {n for _, _, n in positions}
    highest = max(numbers)
    gaps = sorted(set(range(1, highest + 1)) - numbers)
    if gaps or 0 in numbers:
        raise QueryParameterError(
            "placeholders must be numbered $1..$n without gaps; missing: "
            + ", ".join(f"${n}" for n in gaps or [0])
        )
    if len(values) < highest:
        missing = ", ".join(f"${n}" for n in range(len(values) + 1, highest + 1))
        raise QueryParameterError(f"missing parameters: {missing} ({len(values)} given)")
    if len(values) > highest:
        extra = list(params)[highest:] if isinstance(params, Mapping) else values[highest:]
        raise QueryParameterError(
            f"unexpected parameters: {', '.join(map(str, extra))} (the statement uses ${highest})"
        )
    pieces, last = [], 0
    for start, end, number in positions:
        pieces.append(_TEXT_BIND.sub(r"\\:", sql[last:start]))
        pieces.append(f":p{number}")
        last = end
    pieces.append(_TEXT_BIND.sub(r"\\:", sql[last:]))
    return text("".join(pieces)), {f"p{n}": values[n - 1] for n in range(1, highest + 1)}


def _check_names(expected: set[str], given: set[str]) -> None:
    missing, extra = sorted(expected - given), sorted(given - expected)
    problems = []
    if missing:
        problems.append("missing parameters: " + ", ".join(missing))
    if extra:
        problems.append("unexpected parameters: " + ", ".join(extra))
    if problems:
        raise QueryParameterError("; ".join(problems))
