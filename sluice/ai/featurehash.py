"""Feature-hashing embeddings of source code: offline, deterministic, and fast.

Each token, identifier sub-word and token bigram is hashed (blake2b, so vectors are identical in
every process, unlike the salted built-in ``hash``) to one of ``dimensions`` buckets with a hashed
sign; signs make colliding features cancel out on average instead of piling up.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from itertools import pairwise

_TOKEN = re.compile(
    r"[A-Za-z_$][A-Za-z0-9_$]*|\d+(?:\.\d+)?|==|!=|<=|>=|->|=>|&&|\|\||::|\*\*|//|<<|>>|[^\sA-Za-z0-9_]"
)
_SUBWORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _features(text: str) -> Iterator[tuple[str, float]]:
    tokens = _TOKEN.findall(text)
    lowered = [token.lower() for token in tokens]
    for token, low in zip(tokens, lowered, strict=True):
        yield "t:" + low, 1.0
        parts = _SUBWORD.findall(token)
        # Sub-words let `user_name` and `userName` land near each other.
        if len(parts) > 1:
            for part in parts:
                yield "w:" + part.lower(), 0.5
    for left, right in pairwise(lowered):
        yield f"b:{left} {right}", 0.5


def hash_embed(text: str, dimensions: int) -> list[float]:
    """An L2-normalised vector of length ``dimensions``; all zeros when ``text`` has no tokens."""
    vector = [0.0] * dimensions
    for feature, weight in _features(text):
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        sign = 1.0 if digest >> 63 else -1.0
        vector[digest % dimensions] += sign * weight
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:
        return vector
    return [value / norm for value in vector]
