"""Deterministic cache keys for AI calls.

Keys keep the guide's shape, ``ai:<type>:v1:<input digest>:<params digest>``, with 128-bit BLAKE2b
digests (the guide's 8 hex characters collide at scale). Inputs are encoded canonically (JSON with
sorted keys, no ``str()`` concatenation), so field boundaries cannot be forged: ``("ab", "c")`` and
``("a", "bc")`` never share a key. Each key comes with a *fingerprint*, a SHA-256 of the whole input,
stored in the entry and checked on read, so even a digest collision is a miss, never a wrong answer.

A key covers every input that shapes the output: the content, the model, every output-changing
parameter, and the provider's identity (``AIProvider.cache_identity(kind)``: which provider, where,
and a digest of its rules or prompt), so upgrading to changed rules or a changed prompt never serves
the old results. Transport options (timeouts, headers, the end user's id) never split the cache.
Only JSON values make keys: a dict key that is not a string (``{1: x}`` would collide with
``{"1": x}``), a NaN, a set or an object is refused with :class:`InvalidInput` naming it.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sluice.errors import InvalidInput

KEY_VERSION = "v1"
#: Parameters that never change a model's output and so never split the cache.
TRANSPORT_PARAMS = frozenset(
    {"timeout", "request_timeout", "user", "extra_headers", "stream_options"}
)
#: Stands for "the provider's default" when a call does not set its temperature (not 0).
PROVIDER_DEFAULT = "<provider-default>"


class CacheKey(NamedTuple):
    """A cache key and the fingerprint of the full input it was made from."""

    key: str
    fingerprint: str


def canonical(value: Any, what: str = "this value") -> bytes:
    """The canonical JSON encoding of ``value`` (sorted keys, no spaces, exact unicode).

    Raises :class:`InvalidInput` naming ``what`` when ``value`` is not plain JSON data.
    """
    try:
        _check_keys(value)
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(
            f"cannot build a cache key from {what} ({reprlib.repr(value)}): {exc}; pass JSON "
            "data only (str, int, finite float, bool, None, lists and dicts with string keys)"
        ) from None
    # surrogatepass: a lone surrogate in user code still makes a valid, distinct key.
    return text.encode("utf-8", "surrogatepass")


def _check_keys(value: Any) -> None:
    # json.dumps turns the key 1 into "1" silently: two different inputs would share a key.
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"dict key {name!r} is a {type(name).__name__}, not a str")
            _check_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _key(kind: str, subject: bytes, params: Any) -> CacheKey:
    encoded_params = canonical(params, f"the {kind} parameters")
    fingerprint = hashlib.sha256(
        canonical([kind, KEY_VERSION]) + b"\x00" + subject + b"\x00" + encoded_params
    ).hexdigest()
    return CacheKey(
        f"ai:{kind}:{KEY_VERSION}:{_digest(subject)}:{_digest(encoded_params)}", fingerprint
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    return None if value is None else _text(value, name)


def _identity(provider: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if provider is None:
        return None
    if not isinstance(provider, Mapping):
        raise InvalidInput(
            f"provider must be the mapping AIProvider.cache_identity() returns, got {provider!r}"
        )
    return dict(provider)


def normalize_rules(rules: Iterable[str] | None) -> list[str] | None:
    """Rules as a set: order and duplicates do not matter; None and empty both mean "all"."""
    if rules is None:
        return None
    if isinstance(rules, str):
        rules = [rules]
    unique = sorted({_text(rule, "each rule") for rule in rules})
    return unique or None


def _number(value: Any) -> Any:
    # temperature=1 and temperature=1.0 are the same request.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class CacheKeyGenerator:
    """Key builders for the three cached content types (all static)."""

    @staticmethod
    def analysis(
        code: str,
        language: str,
        rules: Iterable[str] | None = None,
        model: str | None = None,
        provider: Mapping[str, Any] | None = None,
    ) -> CacheKey:
        """Key and fingerprint of a code analysis by ``provider`` (its ``cache_identity``)."""
        code = _text(code, "code")
        params = {
            "language": _text(language, "language").lower(),
            "rules": normalize_rules(rules),
            "model": _optional_text(model, "model"),
            "provider": _identity(provider),
        }
        return _key("analysis", code.encode("utf-8", "surrogatepass"), params)

    @staticmethod
    def generate_analysis_key(
        code: str,
        language: str,
        rules: Iterable[str] | None = None,
        model: str | None = None,
        provider: Mapping[str, Any] | None = None,
    ) -> str:
        """The guide's ``ai:analysis:v1:<code digest>:<params digest>``."""
        return CacheKeyGenerator.analysis(code, language, rules, model, provider).key

    @staticmethod
    def embedding(
        text: str, model: str | None = None, provider: Mapping[str, Any] | None = None
    ) -> CacheKey:
        """Key and fingerprint of one text's embedding."""
        params = {"model": _optional_text(model, "model"), "provider": _identity(provider)}
        return _key("embedding", _text(text, "text").encode("utf-8", "surrogatepass"), params)

    @staticmethod
    def generate_embedding_key(
        text: str, model: str | None = None, provider: Mapping[str, Any] | None = None
    ) -> str:
        return CacheKeyGenerator.embedding(text, model, provider).key

    @staticmethod
    def response(
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        provider: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> CacheKey:
        """Key and fingerprint of a model response: the messages and every output-changing parameter.

        A missing ``temperature`` means the provider's default, which is not the same as 0.
        """
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise InvalidInput("messages must be a list of {'role': ..., 'content': ...} mappings")
        for message in messages:
            if not isinstance(message, Mapping) or "role" not in message:
                raise InvalidInput(f"each message needs a 'role', got {message!r}")
        shaping = {k: _number(v) for k, v in params.items() if k not in TRANSPORT_PARAMS}
        if shaping.get("temperature") is None:  # absent or None: the provider's default, not 0
            shaping["temperature"] = PROVIDER_DEFAULT
        if isinstance(shaping.get("stop"), str):
            shaping["stop"] = [shaping["stop"]]
        for name, value in shaping.items():
            canonical(value, f"parameter {name!r}")
        subject = canonical([dict(m) for m in messages], "messages")
        return _key(
            "response",
            subject,
            {
                "model": _optional_text(model, "model"),
                "provider": _identity(provider),
                **shaping,
            },
        )

    @staticmethod
    def generate_response_key(
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        provider: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> str:
        return CacheKeyGenerator.response(messages, model, provider, **params).key

    @staticmethod
    def call(
        content_type: str,
        function: str,
        arguments: Mapping[str, Any],
        model: str | None = None,
    ) -> CacheKey:
        """Key of a decorated function call: its qualified name, model and bound arguments.

        Raises :class:`InvalidInput` naming the first argument that is not JSON data.
        """
        for name, value in arguments.items():
            canonical(value, f"argument {name!r} of {function}")
        params = {"model": _optional_text(model, "model"), "arguments": dict(arguments)}
        return _key(content_type, function.encode(), params)
