"""The stored form of a cache entry, and the check every entry read from L2 must pass.

An entry is ``{"fp": fingerprint, "v": value, "exp": expiry (unix seconds), "cost": USD}``. L2 is
shared: anything under a key may have been written by a foreign or hostile writer, so a read entry is
used only when every field has the type and range :func:`make_envelope` gives it. Anything else is
corrupt, a counted miss, and never an exception (``cost=1e303`` would overflow the savings counter).
"""

from __future__ import annotations

import math
from typing import Any

#: No single call costs more than this (USD); a larger stored cost is not one sluice wrote.
MAX_COST_USD = 1_000.0
#: No entry lives longer than this (seconds); a later expiry is not one sluice wrote.
MAX_LIFETIME = 100 * 365 * 86400.0


def make_envelope(fingerprint: str, value: Any, expires_at: float, cost: float) -> dict[str, Any]:
    """The entry written to L2."""
    return {"fp": fingerprint, "v": value, "exp": expires_at, "cost": cost}


#: The types a number in an entry may have (by exact type: a bool is not a number here).
_REAL = frozenset({float, int})


def envelope_problem(envelope: Any, now: float) -> str | None:
    """Why ``envelope`` is not an entry sluice wrote, or None when it is well formed."""
    if type(envelope) is not dict:
        return f"a {type(envelope).__name__}, not an entry"
    try:
        fp, exp, cost = envelope["fp"], envelope["exp"], envelope["cost"]
    except KeyError as missing:
        return f"no {missing} field"
    if "v" not in envelope:
        return "no 'v' field"
    if type(fp) is not str:
        return "fingerprint is not a string"
    if type(exp) not in _REAL or not math.isfinite(exp) or exp > now + MAX_LIFETIME:
        return f"expiry {exp!r} is not a plausible time"
    if type(cost) not in _REAL or not 0 <= cost <= MAX_COST_USD:
        return f"cost {cost!r} is not a plausible price"
    return None
