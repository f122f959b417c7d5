"""Hypothesis strategies for hostile input: what a careless or malicious caller can pass."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

#: Every character, lone surrogates and control characters included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    any_text,
    st.binary(max_size=8),
    st.builds(object),
    st.sets(st.integers(), max_size=2),
)
keys = st.one_of(
    any_text, st.integers(), st.none(), st.booleans(), st.floats(), st.tuples(st.integers())
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.tuples(children, children),
    ),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A dict nested ``depth`` levels, built without recursion."""
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value}
    return value if isinstance(value, dict) else {"a": value}


#: What a careful caller sends: JSON objects (these must all be carried unchanged).
clean = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=20),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=25,
    ),
    max_size=5,
)
deep = st.integers(min_value=1, max_value=12_000).map(nested)
payloads = st.one_of(clean, st.dictionaries(keys, values, max_size=5), values, deep)


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
