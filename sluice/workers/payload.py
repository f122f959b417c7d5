"""What a task payload may be: a JSON object every process on the way can carry.

:func:`check_json_object` is the structural check at the door (``submit_task``): a ``dict`` of
string keys, nested at most :data:`MAX_DEPTH` levels, holding only strings, finite numbers, booleans,
``None``, lists and dicts, within the size limit. It walks the value without recursion, so a payload
nested 10,000 levels deep is refused with :class:`InvalidInput`, not a ``RecursionError``; and it
refuses what JSON would silently change (keys ``1`` and ``"1"`` collapsing into one, ``NaN`` that
PostgreSQL's JSON cannot store, lone surrogates that cannot be encoded as UTF-8).

:func:`storable` is the other side: a copy of anything (a payload that bypassed the door, an error
history) that a JSON column accepts whatever the database, for the dead-letter table.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sluice.errors import InvalidInput

#: How deeply a payload may nest dicts and lists. Real payloads are a few levels deep; the bound keeps
#: every hop (kombu's JSON, the prefork pool's pickling, the database driver) far from Python's
#: recursion limit.
MAX_DEPTH = 100
#: How a non-finite float is stored (as text) in the dead-letter table.
NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}
_SCALARS = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list, tuple)
_MAX_INT_BITS = 14_000


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{step!r}]" for step in path[:8]) + ("..." if len(path) > 8 else "")


def _check_scalar(value: Any, what: str, path: tuple[Any, ...]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(
            f"{what}{_where(path)} is {value!r}: JSON has no NaN or infinity; send a finite number, "
            "null, or the value as a string"
        )
    if isinstance(value, str) and not _encodable(value):
        raise InvalidInput(
            f"{what}{_where(path)} holds a string that is not valid Unicode (a lone surrogate); "
            "decode it properly or send it base64-encoded"
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_object(value: Any, what: str = "payload", max_bytes: int | None = None) -> str:
    """Raise :class:`InvalidInput` unless ``value`` is a JSON object every hop carries unchanged,
    within ``max_bytes`` (UTF-8) when given; return its compact JSON text."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    # The fast path is C: the encoder refuses NaN, infinities, foreign types, cycles and (with a
    # RecursionError) extreme depth; encoding as UTF-8 refuses lone surrogates. What it would change
    # silently (non-string keys) or carry but a worker could not (depth) is left to a walk over the
    # containers only. Only a refused payload is walked in full, to name what is wrong and where.
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        size = len(text.encode("utf-8"))
        carried = fits(value)
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        _explain(value, what)
        raise InvalidInput(f"{what} cannot be written as JSON: {exc}") from None
    if not carried:
        _explain(value, what)
        raise InvalidInput(f"{what} has a non-string key or nests over {MAX_DEPTH} levels")
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"{what} is {size} bytes, over the {max_bytes}-byte limit (SLUICE_MAX_PAYLOAD_BYTES)"
        )
    return text


def fits(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether every dict in ``value`` has string keys and no list or dict is nested more than
    ``max_depth`` levels deep (``value`` itself, if a container, is level 1)."""
    # Level by level, with plain loops: this runs on every submission and every message a
    # worker decodes, so it is kept lean.
    level: list[Any] = [value]
    for _ in range(max_depth):
        children: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                for key in node:
                    if not isinstance(key, str):
                        return False
                node = node.values()
            elif not isinstance(node, list | tuple):
                continue
            for child in node:
                if isinstance(child, _CONTAINERS):
                    children.append(child)
        if not children:
            return True
        level = children
    return False


def _explain(value: Any, what: str) -> None:
    """Raise :class:`InvalidInput` naming the first thing in ``value`` that is not carried as is."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict | list | tuple):
            if len(path) >= MAX_DEPTH:
                raise InvalidInput(
                    f"{what} is nested more than {MAX_DEPTH} levels deep (at {_where(path)}); "
                    "flatten it"
                )
            if isinstance(node, dict):
                for key, item in node.items():
                    if not isinstance(key, str):
                        raise InvalidInput(
                            f"{what}{_where(path)} has key {key!r} ({type(key).__name__}): JSON "
                            f"keys are strings, so it would merge with {str(key)!r}; use string keys"
                        )
                    _check_scalar(key, what, (*path, key))
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, index)) for index, item in enumerate(node))
        elif isinstance(node, _SCALARS):
            _check_scalar(node, what, path)
        else:
            raise InvalidInput(
                f"{what}{_where(path)} is a {type(node).__name__}, which is not "
                "JSON-serialisable; send strings, numbers, booleans, null, lists and dicts only"
            )


def storable(value: Any, depth: int = MAX_DEPTH) -> Any:
    """A copy of ``value`` that any JSON column stores: non-finite floats and anything not JSON
    become text, keys become strings, NUL characters and lone surrogates are escaped, and what
    nests deeper than ``depth`` is cut (named as such). Never raises."""
    if isinstance(value, bool | type(None)):
        return value
    if isinstance(value, int):
        # Python writes at most 4,300 decimal digits; longer integers are stored as a note.
        return (
            value if value.bit_length() <= _MAX_INT_BITS else f"<int of {value.bit_length()} bits>"
        )
    if isinstance(value, float):
        return value if math.isfinite(value) else NON_FINITE_TEXT.get(value, "NaN")
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict | list | tuple):
        if depth <= 0:
            return f"<{type(value).__name__} nested deeper than {MAX_DEPTH} levels, not kept>"
        if isinstance(value, dict):
            return {_storable_key(k): storable(v, depth - 1) for k, v in value.items()}
        return [storable(item, depth - 1) for item in value]
    try:
        shown = repr(value)[:2000]
    except Exception:  # a broken __repr__ must not cost the dead letter
        shown = "(no repr)"
    return storable_text(f"<{type(value).__name__}> {shown}")


def _storable_key(key: Any) -> str:
    return storable_text(key) if isinstance(key, str) else str(storable(key, depth=1))


def storable_text(text: str) -> str:
    """``text`` without what a database text column refuses (NUL; unencodable surrogates)."""
    if not _encodable(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")
