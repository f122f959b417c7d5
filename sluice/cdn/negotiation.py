"""``Accept-Encoding`` negotiation per RFC 9110 section 12.5.3.

Unlike a regex search for ``gzip`` in the header (which serves gzip to ``gzip;q=0``), the header is
parsed into codings with q-values: ``q=0`` refuses a coding, ``*`` stands for every coding not
named, ``identity`` is acceptable unless refused, names are case-insensitive and ``x-gzip`` means
gzip. A malformed element is skipped rather than failing the request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

IDENTITY = "identity"
#: Server preference at equal weight: brotli is smaller than gzip for the same content.
PREFERENCE = ("br", "gzip")
_ALIASES = {"x-gzip": "gzip"}
_LEAST = 0.0001  # below the smallest q-value a client can send (0.001)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")


def parse_accept_encoding(header: str) -> dict[str, float]:
    """The codings named in ``header`` with their weights; malformed elements are ignored.

    A coding named twice keeps its first weight.
    """
    weights: dict[str, float] = {}
    for element in header.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding or not _TOKEN.match(coding):
            continue
        weight = _weight(params)
        if weight is None:
            continue
        weights.setdefault(_ALIASES.get(coding, coding), weight)
    return weights


def _weight(params: str) -> float | None:
    weight = 1.0
    for param in filter(None, (p.strip() for p in params.split(";"))):
        name, sep, value = param.partition("=")
        if not sep:
            return None
        if name.strip().lower() == "q":
            value = value.strip()
            if not _QVALUE.match(value):
                return None
            weight = float(value)
    return weight


def choose_encoding(header: str | None, available: Sequence[str] = PREFERENCE) -> str:
    """The content coding to send, from ``available`` (in server preference order) or identity.

    No header means no preference, and identity is sent: it is the one coding every client
    understands. When the client refuses identity too and nothing else is acceptable, identity is
    still returned; RFC 9110 allows that instead of a 406, and it is what browsers cope with.
    """
    if not header:
        return IDENTITY
    weights = parse_accept_encoding(header)
    star = weights.get("*")
    # Unnamed identity is acceptable but least preferred, so any named coding beats it.
    implicit_identity = _LEAST if star is None else star
    best, best_q = IDENTITY, weights.get(IDENTITY, implicit_identity)
    for coding in available:
        q = weights.get(coding, star if star is not None else 0.0)
        # At equal weight a coding beats identity; between codings the earlier in `available` wins.
        if q > 0 and (q > best_q or (q == best_q and best == IDENTITY)):
            best, best_q = coding, q
    return best
