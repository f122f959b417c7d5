"""Claim checks for source text: on Redis, a run's files reach the workers through the store.

``sluice analyze`` on Redis stores each file's text under its digest (``src:<BLAKE2b-128 of its
UTF-8>``) and sends only the digest (``content_ref``) in the ``analysis`` chunk; the worker fetches
a chunk's sources with one MGET and checks each against its digest. Texts are content-addressed, so
a re-run of an unchanged tree uploads nothing: one pipelined PEXPIRE finds them all (and keeps them
:data:`SOURCE_TTL` longer), and each chunk is a few hundred bytes. Inline in the message, the same
text was JSON-encoded twice and base64-encoded by the command, and decoded again by the worker's
main and pool processes: on a warm run, the largest cost that distribution alone paid.

The store value is the codec's encoding of the text's bytes (never executed), and a fetched text whose digest
differs (a tampered or foreign value) is refused, so a ref can only ever stand for its own text.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sluice.errors import BackendUnavailable, CodecError, InvalidInput, SluiceError
from sluice.retrying import backoff_with_jitter
from sluice.store import Codec, Store

#: How long a stored text outlives the last run that sent it: past a queue's backlog, a task's
#: retries and a dead letter's replay on the same day.
SOURCE_TTL = 24 * 3600.0
#: How long a task waits for the store to give it its texts (as long as a cache fill waits for a
#: store to come back: ``SLUICE_CACHE_STAMPEDE_WAIT``'s default).
SOURCE_PATIENCE = 30.0
log = logging.getLogger(__name__)
_KEY = "src:"
_REF = re.compile(r"[0-9a-f]{32}")
# Source text is not compressed: zlib costs the command more CPU than the bytes cost Redis.
_CODEC = Codec("msgpack", compress_min_bytes=1 << 62)


def _encoded(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a file's undecodable bytes round-trips exactly.
    return text.encode("utf-8", "surrogatepass")


def _digest(encoded: bytes) -> str:
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


def source_ref(text: str) -> str:
    """The claim check of ``text``: the BLAKE2b-128 hex digest of its UTF-8."""
    return _digest(_encoded(text))


def stash_sources(store: Store, texts: Sequence[str]) -> list[str]:
    """Store the texts not stored yet (every one's expiry renewed) and return their refs, in order.

    Two round trips at most: the renewal, then the upload of the texts it did not find.
    """
    refs = [source_ref(text) for text in texts]
    by_key = {_KEY + ref: text for ref, text in zip(refs, texts, strict=True)}
    present = store.touch_many(by_key, SOURCE_TTL)
    missing = {
        key: _CODEC.encode(_encoded(text)) for key, text in by_key.items() if key not in present
    }
    store.set_many_encoded(missing, SOURCE_TTL)
    return refs


def resolve_sources(
    store: Store, items: Sequence[Mapping[str, Any]], patience: float = 0.0
) -> list[dict[str, Any] | SluiceError]:
    """Each item with its ``content_ref`` replaced by the text (one round trip for all), or the
    error that item alone fails with: a malformed ref, a text no longer stored, a value that is not
    the text it claims to be. Items without a ref are returned as they are.

    A store that does not answer is asked again for ``patience`` seconds (then
    :class:`BackendUnavailable` is raised): a task cannot run without its texts, and a Redis
    restart takes seconds, during which the task layer could not republish it either.
    """
    refs = {index: item["content_ref"] for index, item in enumerate(items) if "content_ref" in item}
    found: dict[str, bytes] = {}
    valid = [ref for ref in refs.values() if isinstance(ref, str) and _REF.fullmatch(ref)]
    if valid:
        found = _fetch(store, [_KEY + ref for ref in dict.fromkeys(valid)], patience)
    resolved: list[dict[str, Any] | SluiceError] = []
    for index, item in enumerate(items):
        if index not in refs:
            resolved.append(dict(item))
            continue
        try:
            text = _text_of(refs[index], found, item.get("path"))
        except CodecError as exc:
            # Not the text: gone, so that the next run's stash stores the text again (its
            # renewal would otherwise keep the wrong value, and fail this file, for ever).
            with contextlib.suppress(SluiceError):  # then it expires; this file fails either way
                store.delete(_KEY + refs[index])
            resolved.append(exc)
            continue
        except SluiceError as exc:
            resolved.append(exc)
            continue
        if "content" in item:
            resolved.append(InvalidInput("an analysis item has both content and content_ref"))
            continue
        resolved.append({**{k: v for k, v in item.items() if k != "content_ref"}, "content": text})
    return resolved


def _fetch(store: Store, keys: list[str], patience: float) -> dict[str, bytes]:
    deadline, attempt = time.monotonic() + patience, 0
    while True:
        try:
            return store.get_many_encoded(keys)
        except BackendUnavailable:
            pause = backoff_with_jitter(attempt, 0.05, 1.0)
            if time.monotonic() + pause > deadline:
                raise
            log.warning("the shared store is unavailable; fetching the sources again")
            time.sleep(pause)
            attempt += 1


def _text_of(ref: Any, found: dict[str, bytes], path: Any) -> str:
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise InvalidInput(f"content_ref must be 32 hex digits (a source digest), got {ref!r}")
    data = found.get(_KEY + ref)
    if data is None:
        raise BackendUnavailable(
            f"the source of {path!r} is no longer in the shared store (kept {SOURCE_TTL:.0f}s "
            "after its run, unless Redis evicted it); run `sluice analyze` again"
        )
    try:
        encoded = _CODEC.decode(data)
    except CodecError as exc:
        raise CodecError(f"the stored source of {path!r} is unreadable: {exc}") from None
    if not isinstance(encoded, bytes) or _digest(encoded) != ref:
        raise CodecError(f"the stored source of {path!r} is not the text its digest names")
    try:
        return encoded.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # a ref forged for bytes that no text encodes to
        raise CodecError(f"the stored source of {path!r} is not UTF-8 text") from None
