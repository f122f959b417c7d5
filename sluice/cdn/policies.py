"""Cache policies per resource type (the guide's table) and how a file maps to its type.

A policy has two lifetimes: ``max_age`` for browsers and ``cdn_ttl`` for shared caches (sent as
``s-maxage`` and ``Surrogate-Control``). ``immutable`` is only ever sent for content-addressed URLs:
a browser honouring it would never revalidate an unversioned URL whose content changes.
"""

from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass, replace
from types import MappingProxyType

from sluice.cdn.config import CDNSettings

YEAR = 365 * 24 * 3600
DAY = 24 * 3600
HOUR = 3600


@dataclass(frozen=True)
class CachePolicy:
    """How long browsers and the CDN may keep one kind of resource.

    :ivar max_age: browser lifetime in seconds.
    :ivar cdn_ttl: CDN (shared cache) lifetime in seconds.
    :ivar immutable: whether versioned URLs of this type may be marked ``immutable``.
    """

    max_age: int
    cdn_ttl: int
    immutable: bool = False

    def cache_control(self, versioned: bool) -> str:
        """The ``Cache-Control`` value; ``immutable`` only when ``versioned`` (content-addressed)."""
        parts = ["public", f"max-age={self.max_age}"]
        if self.cdn_ttl != self.max_age:
            parts.append(f"s-maxage={self.cdn_ttl}")
        if self.max_age == 0:
            parts.append("must-revalidate")
        if self.immutable and versioned:
            parts.append("immutable")
        return ", ".join(parts)

    def headers(self, versioned: bool) -> dict[str, str]:
        """``Cache-Control`` and, when the CDN lifetime differs, ``Surrogate-Control``."""
        headers = {"Cache-Control": self.cache_control(versioned)}
        if self.cdn_ttl != self.max_age:
            headers["Surrogate-Control"] = f"max-age={self.cdn_ttl}"
        return headers


@dataclass(frozen=True)
class ResourceType:
    """One row of the policy table: which extensions belong to it and how it is cached."""

    name: str
    extensions: frozenset[str]
    policy: CachePolicy


_BUILTIN = (
    ResourceType("javascript", frozenset({"js", "mjs"}), CachePolicy(YEAR, YEAR, True)),
    ResourceType("css", frozenset({"css"}), CachePolicy(YEAR, YEAR, True)),
    ResourceType(
        "image",
        frozenset({"png", "jpg", "jpeg", "gif", "ico", "svg", "webp", "avif"}),
        CachePolicy(30 * DAY, 30 * DAY),
    ),
    ResourceType(
        "font", frozenset({"woff", "woff2", "ttf", "otf", "eot"}), CachePolicy(YEAR, YEAR, True)
    ),
    ResourceType("html", frozenset({"html", "htm"}), CachePolicy(0, HOUR)),
)
#: Anything not in the table (source maps, JSON, text): an hour everywhere, never immutable.
OTHER = ResourceType("other", frozenset(), CachePolicy(HOUR, HOUR))

#: The guide's table, by type name (read-only).
RESOURCE_TYPES = MappingProxyType({t.name: t for t in (*_BUILTIN, OTHER)})

#: Types worth compressing: text formats and uncompressed fonts. PNG, JPEG, WOFF2 and the like are
#: already compressed, so a second pass costs CPU and saves nothing.
COMPRESSIBLE_EXTENSIONS = frozenset(
    {
        "js",
        "mjs",
        "css",
        "html",
        "htm",
        "svg",
        "json",
        "map",
        "xml",
        "txt",
        "ico",
        "ttf",
        "otf",
        "eot",
        "webmanifest",
        "wasm",
        "csv",
        "md",
    }
)
_EXTRA_TYPES = {
    "mjs": "text/javascript",
    "map": "application/json",
    "woff2": "font/woff2",
    "webmanifest": "application/manifest+json",
    "wasm": "application/wasm",
}


def extension(path: str) -> str:
    """The lower-case extension of ``path`` without the dot ('' when none)."""
    return posixpath.splitext(path)[1][1:].lower()


def content_type(path: str) -> str:
    """The ``Content-Type`` to serve ``path`` with (text types in UTF-8)."""
    ext = extension(path)
    kind = (
        _EXTRA_TYPES.get(ext) or mimetypes.guess_type("x." + ext)[0] or "application/octet-stream"
    )
    if kind.startswith("text/") or kind in {"application/javascript", "application/json"}:
        return f"{kind}; charset=utf-8"
    return kind


def is_compressible(path: str) -> bool:
    """Whether ``path`` is a type that gzip/brotli can usefully shrink."""
    return extension(path) in COMPRESSIBLE_EXTENSIONS


class PolicyTable:
    """The resource types with any ``SLUICE_CDN_<TYPE>_MAX_AGE``/``_CDN_TTL`` overrides applied."""

    def __init__(self, settings: CDNSettings | None = None) -> None:
        types = dict(RESOURCE_TYPES)
        for name, max_age, cdn_ttl in settings.policy_overrides if settings else ():
            old = types[name].policy
            policy = replace(
                old,
                max_age=old.max_age if max_age < 0 else max_age,
                cdn_ttl=old.cdn_ttl if cdn_ttl < 0 else cdn_ttl,
            )
            types[name] = replace(types[name], policy=policy)
        self.types: dict[str, ResourceType] = types
        self._by_extension = {ext: t for t in types.values() for ext in t.extensions}

    def type_for(self, path: str) -> ResourceType:
        """The resource type of ``path`` by its extension (``other`` when unknown)."""
        return self._by_extension.get(extension(path), self.types["other"])

    def policy_for(self, path: str) -> CachePolicy:
        """The cache policy of ``path``."""
        return self.type_for(path).policy
