"""Accept-Encoding negotiation against a table of RFC 9110 cases."""

from __future__ import annotations

import pytest

from sluice.cdn.negotiation import choose_encoding, parse_accept_encoding

CASES = [
    # (header, expected coding, why)
    (None, "identity", "no header: no preference, identity is safe"),
    ("", "identity", "empty header: only identity is acceptable"),
    ("br, gzip", "br", "the guide's example"),
    ("gzip, br", "br", "equal weight: server prefers brotli"),
    ("gzip", "gzip", "only gzip"),
    ("gzip;q=0", "identity", "q=0 refuses gzip (WhiteNoise #352)"),
    ("gzip;q=0, br;q=0", "identity", "both refused"),
    ("br;q=0, gzip", "gzip", "brotli refused"),
    ("gzip;q=1.0, br;q=0.5", "gzip", "higher weight wins over preference"),
    ("br;q=0.5", "br", "unnamed identity is least preferred"),
    ("br;q=0.5, identity", "identity", "identity named with a higher weight"),
    ("br, identity", "br", "equal weight: a coding beats identity"),
    ("*", "br", "star accepts every coding"),
    ("*;q=0.5, gzip", "gzip", "explicit gzip outweighs star"),
    ("*;q=0", "identity", "everything refused: identity as a last resort"),
    ("*;q=0, gzip", "gzip", "star refusal does not cover a named coding"),
    ("*, br;q=0", "gzip", "star with brotli refused"),
    ("GZIP", "gzip", "codings are case-insensitive"),
    ("Br;Q=1", "br", "parameter names are case-insensitive"),
    ("x-gzip", "gzip", "x-gzip is gzip"),
    ("x-gzip;q=0, br", "br", "refused alias"),
    ("deflate, compress", "identity", "nothing we have"),
    ("gzip;q=abc, br;q=2", "identity", "malformed q-values drop the element"),
    ("gzip;q=0.8x, br", "br", "trailing junk in q drops gzip only"),
    ("gzip;q=1.0001", "identity", "more than three decimals is malformed"),
    ("gzip;q=0.001", "gzip", "smallest positive weight still beats implicit identity"),
    (",,, ;q=1, gzip", "gzip", "empty elements are ignored"),
    ("gzip;level=1", "gzip", "unknown parameters are allowed"),
    ("gzip;q", "identity", "parameter without value is malformed"),
    ("gzip ; q=0.5 , br ; q=0.4", "gzip", "whitespace around separators"),
    ("identity;q=0, br", "br", "identity refused, br acceptable"),
    ("identity;q=0", "identity", "identity refused, nothing else: identity regardless"),
    ("gzip, gzip;q=0", "gzip", "first occurrence wins"),
    ("\u00e9t\u00e9, br", "br", "non-token coding ignored"),
    ("b\x00r, gzip", "gzip", "control characters ignored"),
]


@pytest.mark.parametrize(("header", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_choose_encoding_table(header: str | None, expected: str, why: str) -> None:
    assert choose_encoding(header) == expected, why


def test_available_restricts_choice() -> None:
    assert choose_encoding("br, gzip", available=("gzip",)) == "gzip"
    assert choose_encoding("br", available=("gzip",)) == "identity"


def test_parse_weights() -> None:
    assert parse_accept_encoding("gzip;q=0.5, X-GZIP, br, *;q=0") == {
        "gzip": 0.5,
        "br": 1.0,
        "*": 0.0,
    }


@pytest.mark.parametrize(
    "header", ["", ";", "q=1", ";;;,,,", "\xff\xfe", "a" * 10000, "gzip;" * 500]
)
def test_malformed_headers_never_raise(header: str) -> None:
    assert choose_encoding(header) in {"identity", "gzip", "br"}
