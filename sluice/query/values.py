"""Row values to and from the shared store's JSON/msgpack model, without loss.

Scalars (None, bool, int, float, str) are stored as they are; every other value is wrapped in a
one-key-per-field dict ``{"t": tag, "v": payload}``. Because *every* dict is such a wrapper (a JSON
column's dict is wrapped as ``json``), decoding is unambiguous.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

_SCALARS = (type(None), bool, int, float, str)


class UnencodableValue(TypeError):
    """A value of a type the query cache cannot store (its query is then executed uncached)."""


_ENCODERS: list[tuple[Any, str, Callable[[Any], Any]]] = [
    # datetime before date: a datetime is also a date.
    (dt.datetime, "datetime", lambda v: v.isoformat()),
    (dt.date, "date", lambda v: v.isoformat()),
    (dt.time, "time", lambda v: v.isoformat()),
    (dt.timedelta, "timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
    (Decimal, "decimal", str),
    (uuid.UUID, "uuid", str),
    (bytes | bytearray | memoryview, "bytes", lambda v: base64.b64encode(bytes(v)).decode()),
]
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
    "json": lambda v: v,
    "tuple": lambda v: tuple(decode_value(item) for item in v),
}


def encode_value(value: Any) -> Any:
    """A store-safe form of ``value``; raise :class:`UnencodableValue` for unknown types."""
    if type(value) in _SCALARS:  # exact types: an Enum subclass would come back as a plain value
        return value
    if isinstance(value, dict | list):
        _check_json(value)
        return {"t": "json", "v": value}
    if isinstance(value, tuple):
        return {"t": "tuple", "v": [encode_value(item) for item in value]}
    for kind, tag, encode in _ENCODERS:
        if isinstance(value, kind):
            return {"t": tag, "v": encode(value)}
    raise UnencodableValue(f"cannot cache a value of type {type(value).__name__}")


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value`."""
    if isinstance(value, dict):
        return _DECODERS[value["t"]](value["v"])
    return value


def _check_json(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnencodableValue("JSON object keys must be strings to be cached")
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)
    elif not isinstance(value, _SCALARS):
        raise UnencodableValue(f"cannot cache a JSON value of type {type(value).__name__}")
