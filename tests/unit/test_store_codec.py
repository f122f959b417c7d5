"""The store codec: self-describing, compressing, and never executing what it reads."""

from __future__ import annotations

import contextlib
import os
import pickle
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import CodecError, InvalidInput
from sluice.store import MAX_DECOMPRESSED_BYTES, Codec

VALUES: list[Any] = [
    None,
    False,
    2**63 - 1,
    -7,
    0.1,
    "",
    "ünïcödé ✓ 日本語 🚀",
    [],
    {},
    [1, [2, [3, [4]]]],
    {"a": {"b": [1, "x", None, {"c": 2.5}]}},
]


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip(fmt: Any, value: Any) -> None:
    codec = Codec(fmt)
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_tuples_come_back_as_lists(fmt: Any) -> None:
    codec = Codec(fmt)
    assert codec.decode(codec.encode({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


def test_msgpack_keeps_bytes_and_int_keys() -> None:
    codec = Codec("msgpack")
    assert codec.decode(codec.encode({1: b"\x00\xff"})) == {1: b"\x00\xff"}


def test_either_format_reads_the_other() -> None:
    as_json, as_msgpack = Codec("json"), Codec("msgpack")
    assert as_msgpack.decode(as_json.encode({"k": [1]})) == {"k": [1]}
    assert as_json.decode(as_msgpack.encode({"k": [1]})) == {"k": [1]}


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_compresses_large_compressible_bodies(fmt: Any) -> None:
    codec = Codec(fmt, compress_min_bytes=100)
    big, small = {"text": "abc" * 1000}, {"text": "abc"}
    encoded = codec.encode(big)
    assert len(encoded) < 500
    assert encoded[0] & 0x10
    assert not codec.encode(small)[0] & 0x10
    assert codec.decode(encoded) == big


def test_skips_compression_that_does_not_help() -> None:
    codec = Codec("msgpack", compress_min_bytes=10)
    noise = os.urandom(4096)
    encoded = codec.encode(noise)
    assert not encoded[0] & 0x10
    assert codec.decode(encoded) == noise


@pytest.mark.parametrize(
    ("fmt", "value", "type_name"),
    [
        ("msgpack", {1, 2}, "set"),
        ("json", {1, 2}, "set"),
        ("msgpack", object(), "object"),
        ("json", b"bytes", "bytes"),
        ("json", float("nan"), "float"),
        ("msgpack", 2**70, "int"),
    ],
)
def test_unencodable_values_name_their_type(fmt: Any, value: Any, type_name: str) -> None:
    with pytest.raises(CodecError, match=type_name):
        Codec(fmt).encode(value)


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("executed",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(_Exploit(), protocol=4),
        pickle.dumps({"a": 1}, protocol=2),
        b"\x80\x04garbage",
        b"",
        b"\x7fjunk",
        b"{}",
        b"\x01{not json",
        b"\x02\xc1",  # 0xc1 is never valid msgpack
        b"\x12" + b"not zlib",
        b"\x12" + zlib.compress(b"\x93\x01\x02\x03")[:-3],  # truncated stream
    ],
)
def test_refuses_foreign_and_corrupt_payloads(
    payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CodecError):
        Codec().decode(payload)
    assert "executed" not in capsys.readouterr().out


def test_refuses_non_bytes() -> None:
    with pytest.raises(CodecError):
        Codec().decode("text")  # type: ignore[arg-type]


def test_refuses_zip_bombs() -> None:
    squeezer = zlib.compressobj()
    chunk = b"\x00" * (1 << 20)
    bomb = b"".join(
        squeezer.compress(chunk) for _ in range(MAX_DECOMPRESSED_BYTES // len(chunk) + 1)
    )
    bomb += squeezer.flush()
    assert len(bomb) < 1 << 20
    with pytest.raises(CodecError, match="expands beyond"):
        Codec().decode(b"\x12" + bomb)


def test_rejects_bad_configuration() -> None:
    with pytest.raises(InvalidInput):
        Codec("pickle")
    with pytest.raises(InvalidInput):
        Codec(compress_min_bytes=-1)


# -- the decoded object is bounded, not only the decompressed bytes ------------------------------


def _array_header(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def _map_header(n: int) -> bytes:
    return b"\xdf" + n.to_bytes(4, "big")


def _zlib(header: int, body: bytes) -> bytes:
    return bytes((header,)) + zlib.compress(body, 9)


_HUGE = MAX_DECOMPRESSED_BYTES - 16


@pytest.mark.parametrize(
    "payload",
    [
        # The issue's case: ~65 KB of zlib, a msgpack array of 67M empty arrays (4.7 GB decoded).
        _zlib(0x12, _array_header(_HUGE) + b"\x90" * _HUGE),
        # The same budget spent in many small containers: 8,000 arrays of 8,000 empty maps.
        _zlib(0x12, _array_header(8000) + (_array_header(8000) + b"\x80" * 8000) * 8000),
        # A map of 33M nil -> nil pairs, and an array of 67M nils (one shared object each).
        _zlib(0x12, _map_header(_HUGE // 2) + b"\xc0\xc0" * (_HUGE // 2)),
        _zlib(0x12, _array_header(_HUGE) + b"\xc0" * _HUGE),
        # The same in JSON: 20M empty lists and 20M zeros.
        _zlib(0x11, b"[" + b"[]," * (20 << 20) + b"[]]"),
        _zlib(0x11, b"[" + b"0," * (30 << 20) + b"0]"),
    ],
    ids=["flat-arrays", "nested-arrays", "map", "nils", "json-lists", "json-zeros"],
)
def test_small_payloads_that_decode_into_gigabytes_are_refused(payload: bytes) -> None:
    assert len(payload) < 200_000
    with pytest.raises(CodecError, match=r"elements|max_array_len|max_map_len"):
        Codec().decode(payload)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_deep_nesting_is_refused(fmt: str) -> None:
    header, body = (0x02, b"\x91" * 5000 + b"\xc0") if fmt == "msgpack" else (0x01, b"[" * 5000)
    with pytest.raises(CodecError):
        Codec().decode(bytes((header,)) + body)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_a_large_legitimate_value_still_round_trips(fmt: str) -> None:
    value = {"vectors": [[i / 7, -i] for i in range(200_000)], "text": "x" * (3 << 20)}
    codec = Codec(fmt)
    assert codec.decode(codec.encode(value)) == value


@settings(max_examples=400, deadline=2000)
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_a_value_or_a_codec_error(data: bytes) -> None:
    """Raw, and behind every header plain and compressed: any other exception fails the test."""
    payloads = [data]
    for header in (0x01, 0x02, 0x11, 0x12):
        payloads += [bytes((header,)) + data, bytes((header,)) + zlib.compress(data)]
    for payload in payloads:
        with contextlib.suppress(CodecError):
            Codec().decode(payload)
