"""Shrink an oversized statement to its shape before it is parsed.

A statement with a 150,000-value ``IN`` list is 1 MB of text and takes sqlglot seconds and
~100 MB to parse, yet its shape is that of the same statement with one value. Here a regular
expression lexer finds literal lists (``IN (...)``, ``ARRAY[...]``) and runs of literal rows after
``VALUES`` and cuts all but their first item out of the original text; everything else is kept
verbatim, so the result parses to the same tables, writes and function calls.

The lexer knows quoted strings and identifiers and comments. It does not know backslash escapes
in ``E'...'`` strings or dollar-quoted bodies, which could make it mistake code for string
content; statements containing either are not reduced (the caller then treats them as unparsed,
which is conservative).
"""

from __future__ import annotations

import re

# Commas, brackets and numbers first: they are most of an oversized statement.
_TOKEN = re.compile(
    r"""[,()\[\]]|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*
        |/\*.*?\*/|::|\$\d+|:\w+|%\(\w+\)s|%s|\?|\w+|\S""",
    re.S | re.X,
)
_UNSAFE = re.compile(r"\\|\$(?:[A-Za-z_]\w*)?\$")
_VALUE_WORDS = frozenset({"null", "true", "false"})
_CLOSING = {"(": ")", "[": "]"}


def reduce_value_lists(sql: str) -> str | None:
    """``sql`` with every literal list cut to its first item; None when it cannot be lexed safely."""
    if _UNSAFE.search(sql):
        return None
    tokens = [m for m in _TOKEN.finditer(sql) if m[0][:2] not in ("--", "/*")]
    texts = [m[0].lower() for m in tokens]
    cuts: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        opener = texts[i]
        before = texts[i - 1] if i else ""
        if (opener == "(" and before == "in") or (opener == "[" and before == "array"):
            end, count = _literal_run(texts, i + 1, _CLOSING[opener])
            if count > 1:
                cuts.append((_value_end(tokens, texts, i + 1), tokens[end].start()))
            i = end + 1 if count else i + 1
            continue
        if opener == "(" and before == "values":
            i = _collapse_rows(tokens, texts, i, cuts)
            continue
        i += 1
    if not cuts:
        return sql
    pieces, last = [], 0
    for start, end in cuts:
        pieces.append(sql[last:start])
        last = end
    pieces.append(sql[last:])
    return "".join(pieces)


def _is_value(text: str) -> bool:
    first = text[0]
    return (
        first in "'?" or first.isdigit() or text in _VALUE_WORDS
        or (first in "$:" and len(text) > 1 and text != "::") or text.startswith("%")
    )  # fmt: skip


def _value_width(texts: list[str], i: int) -> int:
    """How many tokens the literal at ``i`` spans (``-`` before a number is part of it); 0 if none."""
    if i < len(texts) and texts[i] == "-" and i + 1 < len(texts) and texts[i + 1][0].isdigit():
        return 2
    return 1 if i < len(texts) and _is_value(texts[i]) else 0


def _literal_run(texts: list[str], i: int, closing: str) -> tuple[int, int]:
    """From ``i``: ``v, v, ..., v`` then ``closing``; (index of ``closing``, count) or (i, 0)."""
    count = 0
    while True:
        width = _value_width(texts, i)
        if not width:
            return i, 0
        count, i = count + 1, i + width
        if i < len(texts) and texts[i] == closing:
            return i, count
        if i >= len(texts) or texts[i] != ",":
            return i, 0
        i += 1


def _value_end(tokens: list[re.Match[str]], texts: list[str], i: int) -> int:
    return tokens[i + _value_width(texts, i) - 1].end()


def _collapse_rows(
    tokens: list[re.Match[str]], texts: list[str], i: int, cuts: list[tuple[int, int]]
) -> int:
    """Keep the first ``(literals)`` row after VALUES, cut the following rows of the same width."""
    end, width = _literal_run(texts, i + 1, ")")
    if not width:
        return i + 1
    row_end, last_kept = end, end
    while row_end + 2 < len(texts) and texts[row_end + 1] == "," and texts[row_end + 2] == "(":
        next_end, next_width = _literal_run(texts, row_end + 3, ")")
        if next_width != width:
            break
        row_end = next_end
    if row_end != last_kept:
        cuts.append((tokens[last_kept].end(), tokens[row_end].end()))
    return row_end + 1
