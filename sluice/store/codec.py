"""Turn stored values into bytes and back, without ever executing anything.

Every payload starts with one header byte naming its format (JSON or msgpack) and whether the body
is zlib-compressed, so a reader decodes whatever a writer with different settings produced. Anything
else (an unknown header, garbage, a pickle, which starts with ``0x80``) raises :class:`CodecError`.

Round-trips are value-preserving for ``None``, ``bool``, ``int``, ``float``, ``str``, lists and
dicts; tuples come back as lists. msgpack also carries ``bytes``; JSON does not.

Decoding is bounded in what it builds, not only in the bytes it inflates: a few kilobytes of zlib
can hold megabytes of one-byte msgpack containers, each a Python object of 56+ bytes. Every element
takes at least one byte of body, so a body of at most :data:`MAX_DECODED_ITEMS` bytes decodes to at
most that many objects and is decoded directly; a longer body is decoded with an element budget
(no container longer than the budget, and the elements of all containers together within it). Nesting
is bounded by the parsers' own stacks (msgpack: 1,024 levels; JSON: the interpreter's recursion
limit). Whatever the bytes, :meth:`Codec.decode` returns a value or raises :class:`CodecError`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgpack

from sluice.errors import CodecError, InvalidInput

# Decompressing more than this is refused, so a tiny hostile payload cannot exhaust memory.
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
#: At most this many elements (container items and containers) are built from one payload.
MAX_DECODED_ITEMS = 1 << 20

_JSON = 0x01
_MSGPACK = 0x02
_ZLIB = 0x10
_FORMATS: dict[str, int] = {"json": _JSON, "msgpack": _MSGPACK}
_KNOWN_HEADERS = frozenset({_JSON, _MSGPACK, _JSON | _ZLIB, _MSGPACK | _ZLIB})


class Codec:
    """Encode values as self-describing bytes.

    :param fmt: the format new values are written in; both formats are always readable.
    :param compress_min_bytes: bodies at least this long are zlib-compressed when that saves space.
    """

    def __init__(self, fmt: str = "msgpack", compress_min_bytes: int = 1024) -> None:
        if fmt not in _FORMATS:
            raise InvalidInput(f"unknown codec format {fmt!r}; use one of: json, msgpack")
        if compress_min_bytes < 0:
            raise InvalidInput(f"compress_min_bytes must be >= 0, got {compress_min_bytes}")
        self.fmt = fmt
        self.compress_min_bytes = compress_min_bytes
        self._header = _FORMATS[fmt]

    def __repr__(self) -> str:
        return f"Codec(fmt={self.fmt!r}, compress_min_bytes={self.compress_min_bytes})"

    def encode(self, value: Any) -> bytes:
        """Serialize ``value``; raise :class:`CodecError` naming the type that cannot be stored."""
        body = self._serialize(value)
        header = self._header
        if len(body) >= self.compress_min_bytes:
            packed = zlib.compress(body, 6)
            if len(packed) < len(body):
                body, header = packed, header | _ZLIB
        return bytes((header,)) + body

    def decode(self, data: bytes) -> Any:
        """Deserialize bytes made by :meth:`encode`; raise :class:`CodecError` on anything else."""
        # bytes first: every read's path, and a type() test costs less than isinstance of a union
        if (type(data) is not bytes and not isinstance(data, bytearray | memoryview)) or not data:
            raise CodecError(
                f"cannot decode {type(data).__name__} payload: expected non-empty bytes"
            )
        header = data[0]
        if header not in _KNOWN_HEADERS:
            raise CodecError(
                f"unknown payload header 0x{header:02x}: not written by sluice's codec "
                "(pickled and foreign data are refused)"
            )
        body: bytes | bytearray | memoryview
        if not header & _ZLIB:
            body = memoryview(data)[1:]  # no copy of the payload
        elif len(data) <= _SHORT_ZLIB:
            # Every compressed read's path: copying a short compressed body costs less than
            # making a memoryview of it.
            try:
                body = zlib.decompress(data[1:])
            except zlib.error as exc:
                raise CodecError(f"corrupt or truncated compressed payload: {exc}") from exc
        else:
            body = _inflate(memoryview(data)[1:])
        try:
            if header & ~_ZLIB == _JSON:
                text = bytes(body)
                if len(text) > MAX_DECODED_ITEMS:
                    _check_json_budget(text)
                return json.loads(text.decode("utf-8"))
            if len(body) <= MAX_DECODED_ITEMS:
                return msgpack.unpackb(body, raw=False, strict_map_key=False)
            return _unpack_within_budget(body)
        except (ValueError, TypeError, RecursionError, MemoryError, msgpack.UnpackException) as exc:
            raise CodecError(f"corrupt {self._name(header)} payload: {exc}") from exc

    def _serialize(self, value: Any) -> bytes:
        try:
            if self.fmt == "json":
                return json.dumps(
                    value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode("utf-8")
            return msgpack.packb(value, use_bin_type=True, datetime=False)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise CodecError(
                f"cannot encode a value of type {type(value).__name__} as {self.fmt}: {exc}"
            ) from exc

    @staticmethod
    def _name(header: int) -> str:
        return "json" if header & ~_ZLIB == _JSON else "msgpack"


class _OverBudget(ValueError):
    """Raised from inside the unpacker's hooks to abort a decode that builds too much."""


def _unpack_within_budget(body: bytes | memoryview) -> Any:
    """msgpack-decode a long body, refusing it once it has built :data:`MAX_DECODED_ITEMS` items."""
    built = 0

    def count(container: Any) -> Any:
        nonlocal built
        built += len(container) + 1
        if built > MAX_DECODED_ITEMS:
            raise _OverBudget(
                f"payload decodes to more than {MAX_DECODED_ITEMS} elements; refusing it"
            )
        return container

    limit = MAX_DECODED_ITEMS
    return msgpack.unpackb(
        body,
        raw=False,
        strict_map_key=False,
        list_hook=count,
        object_hook=count,
        # Checked before the container is allocated, so one huge header cannot allocate at all.
        max_array_len=limit,
        max_map_len=limit,
        max_str_len=MAX_DECOMPRESSED_BYTES,
        max_bin_len=MAX_DECOMPRESSED_BYTES,
        max_ext_len=MAX_DECOMPRESSED_BYTES,
    )


def _check_json_budget(body: bytes) -> None:
    """Refuse a long JSON body that may build too many elements.

    Every element but the first of a container follows a comma and every container opens with a
    bracket, so their count bounds the elements built (commas inside strings only over-count).
    """
    upper = body.count(b",") + body.count(b"[") + body.count(b"{")
    if upper > MAX_DECODED_ITEMS:
        raise _OverBudget(
            f"payload may decode to more than {MAX_DECODED_ITEMS} elements; refusing it"
        )


#: Deflate expands at most 1032:1, so a payload this short cannot inflate past the limit and is
#: inflated in one call by :meth:`Codec.decode` (the streaming inflater costs more per payload).
_SHORT_ZLIB = MAX_DECOMPRESSED_BYTES // 1032


def _inflate(body: bytes | memoryview) -> bytes:
    """Inflate a body too long for one call, refusing it past :data:`MAX_DECOMPRESSED_BYTES`."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise CodecError(f"corrupt compressed payload: {exc}") from exc
    if inflater.unconsumed_tail:
        raise CodecError(
            f"compressed payload expands beyond {MAX_DECOMPRESSED_BYTES} bytes; refusing it"
        )
    if not inflater.eof:
        raise CodecError("truncated compressed payload")
    return out
