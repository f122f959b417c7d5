"""Broker entries that are no message: recognised, and carried to the worker as one it refuses.

Anyone with write access to a broker's storage (a Redis list, the embedded broker's folder) can put
an entry there that is no kombu envelope. kombu cannot deliver one (a Celery worker stopped on it
with "Unrecoverable error"), so the transports hand it over as :func:`unreadable_entry`: its raw
bytes as the body of a content type no worker accepts, which the worker's consumer dead-letters raw
(:mod:`sluice.workers.poison`). The Redis transport applies the same rules in its take script.
"""

from __future__ import annotations

import base64
import re
from typing import Any

#: The content type of an entry that was no message. No serializer is registered for it.
UNREADABLE_ENTRY = "application/x-unreadable-entry"
_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")


def _text(value: object) -> bool:
    return value is None or isinstance(value, str)


def deliverable(entry: object) -> bool:
    """Whether a decoded entry is an envelope kombu can deliver, restore and reject."""
    if not isinstance(entry, dict) or not isinstance(entry.get("headers"), dict):
        return False
    properties = entry.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return False
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not all(
        isinstance(info.get(field), str) for field in ("exchange", "routing_key")
    ):
        return False
    body = entry.get("body")
    if not all(_text(entry.get(field)) for field in ("body", "content-type", "content-encoding")):
        return False
    encoding = properties.get("body_encoding")
    if encoding == "base64":
        return body is None or (len(body) % 4 == 0 and _BASE64.fullmatch(body) is not None)
    return encoding is None or encoding == "utf-8"


def unreadable_entry(raw: bytes, delivery_tag: str, queue: str) -> dict[str, Any]:
    """The envelope that carries ``raw``, an entry of ``queue`` that was no message."""
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-type": UNREADABLE_ENTRY,
        "content-encoding": "binary",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }
