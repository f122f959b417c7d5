"""Purge paths: validation at queue time, collapsing, and widening to what each CDN accepts.

A purge path is a URL path starting with ``/``; ``*`` may appear anywhere and matches any run of
characters. Providers are less expressive, so a pattern is *widened* (never narrowed) to the
nearest form the provider supports: purging a little more is safe, purging less is not.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable

from sluice.errors import InvalidInput

MAX_PATH_LENGTH = 1024
EVERYTHING = "/*"
#: Surrogate keys name a path and its ancestor directories down to this depth.
SURROGATE_KEY_DEPTH = 3
# RFC 3986 path characters plus '*' and '?', printable ASCII only: the CDNs reject the rest.
_VALID = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def validate_purge_path(path: object) -> str:
    """``path`` if it is a valid purge path, else :class:`InvalidInput` saying why."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"purge path must be a non-empty string, got {path!r}")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInput(
            f"purge path is longer than {MAX_PATH_LENGTH} characters: {path[:60]!r}..."
        )
    if not path.startswith("/"):
        raise InvalidInput(f"purge path {path!r} must start with '/'")
    if not _VALID.fullmatch(path):
        raise InvalidInput(
            f"purge path {path!r} has characters a CDN refuses (spaces, backslashes, non-ASCII: "
            "percent-encode them)"
        )
    if "//" in path or ".." in path.split("?", 1)[0].split("/"):
        raise InvalidInput(f"purge path {path!r} has an empty or '..' segment")
    return path


def is_pattern(path: str) -> bool:
    """Whether ``path`` holds a wildcard."""
    return "*" in path


def collapse(paths: Iterable[str], threshold: int) -> list[str]:
    """Deduplicate ``paths``; replace more than ``threshold`` files of one directory by ``dir/*``.

    Paths already covered by a trailing-``*`` pattern are dropped; ``/*`` swallows everything.
    """
    unique = list(dict.fromkeys(paths))
    if EVERYTHING in unique:
        return [EVERYTHING]
    by_directory: dict[str, list[str]] = defaultdict(list)
    for path in unique:
        if not is_pattern(path):
            by_directory[posixpath.dirname(path.split("?", 1)[0])].append(path)
    crowded = {d for d, files in by_directory.items() if len(files) > threshold}
    result = [p for p in unique if is_pattern(p)] + [
        posixpath.join(d, "*") for d in sorted(crowded)
    ]
    result += [p for p in unique if not is_pattern(p) and posixpath.dirname(p) not in crowded]
    return [p for p in dict.fromkeys(result) if not is_covered(p, result, strictly=True)]


def is_covered(path: str, purged: Iterable[str], strictly: bool = False) -> bool:
    """Whether purging ``purged`` also purges ``path``: ``path`` is among them (unless
    ``strictly``) or starts with the prefix of one of their trailing-``*`` patterns."""
    for other in purged:
        if other == path:
            if not strictly:
                return True
        elif other.endswith("*") and "*" not in other[:-1] and path.startswith(other[:-1]):
            return True
    return False


def widen_to_trailing_wildcard(path: str) -> str:
    """Cut a pattern at its first ``*`` (CloudFront: ``*`` only as the last character)."""
    star = path.find("*")
    return path if star < 0 else path[: star + 1]


def pattern_directory(path: str) -> str:
    """The directory (ending in ``/``) holding everything a pattern can match."""
    star = path.find("*")
    head = path if star < 0 else path[:star]
    return head[: head.rfind("/") + 1]


def surrogate_keys(url_path: str) -> list[str]:
    """The surrogate keys of a response: its path and its ancestor directories (see nginx map)."""
    parts = url_path.split("?", 1)[0].split("/")[1:-1][:SURROGATE_KEY_DEPTH]
    return [url_path] + ["/" + "".join(f"{p}/" for p in parts[: i + 1]) for i in range(len(parts))]


def surrogate_key_for_pattern(path: str) -> str | None:
    """The surrogate key covering every match of a pattern; None when only a full purge does."""
    directory = pattern_directory(path)
    parts = directory.strip("/").split("/")[:SURROGATE_KEY_DEPTH]
    return "/" + "".join(f"{p}/" for p in parts) if parts != [""] else None
