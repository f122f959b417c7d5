"""Entries anyone with write access to a broker's storage can put where a message should be.

Shared by the tests of both sluice transports (Redis lists, the embedded broker's folder): each must
hand every such entry over as an unreadable one, byte-exact, and keep it until it is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

#: Each turns a well-formed envelope into one kombu could not deliver, restore or reject.
BROKEN_ENVELOPES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tag not a string": lambda m: m["properties"].update(delivery_tag=7),
    "no delivery_info": lambda m: m["properties"].pop("delivery_info"),
    "delivery_info a list": lambda m: m["properties"].update(delivery_info=["normal"]),
    "routing key not a string": lambda m: m["properties"]["delivery_info"].update(routing_key={}),
    "no headers": lambda m: m.pop("headers"),
    "headers a string": lambda m: m.update(headers="x"),
    "headers a list": lambda m: m.update(headers=[1, 2]),
    "body a number": lambda m: m.update(body=5),
    "unknown body encoding": lambda m: m["properties"].update(body_encoding="rot13"),
    "body not base64": lambda m: m.update(body="not base64!"),
    "body not base64, of a base64 length": lambda m: m.update(body="not!base64!!"),
    "content type a list": lambda m: m.update({"content-type": ["json"]}),
    "properties a list": lambda m: m.update(properties=[]),
}


def broken(envelope: dict[str, Any], how: str) -> bytes:
    """``envelope`` (a copy) broken the way ``how`` names, as the bytes a broker would hold."""
    copy = json.loads(json.dumps(envelope))
    BROKEN_ENVELOPES[how](copy)
    return json.dumps(copy).encode()


def nested(envelope: dict[str, Any], depth: int) -> bytes:
    """``envelope`` with a field nested ``depth`` levels deep."""
    text = json.dumps(envelope)
    return (text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}").encode()


#: Raw bytes, any JSON value, or the name of a :data:`BROKEN_ENVELOPES` entry (a ``str``).
ENTRIES = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ).map(lambda value: json.dumps(value).encode()),
    st.sampled_from(sorted(BROKEN_ENVELOPES)),
)
