"""Asset path safety: every path a caller names must stay inside the static root.

Requests and manifests name assets with URL-style relative paths. A path is refused before any
file is touched when it is absolute, holds ``..``, a backslash (Windows separator that would slip
past a POSIX check) or a NUL; a path that resolves through a symlink to outside the root is refused
too, so a link planted in the tree cannot expose the rest of the disk.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from sluice.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_relative(path: str) -> str:
    """``path`` as a normalised relative POSIX path, or :class:`InvalidInput` if it could escape."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"asset path must be a non-empty string, got {path!r}")
    if "\\" in path or "\x00" in path:
        raise InvalidInput(f"asset path {path!r} contains a backslash or NUL")
    if _CONTROL.search(path) or not _encodable(path):
        raise InvalidInput(f"asset path {path!r} contains a control character or invalid Unicode")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise InvalidInput(f"asset path {path!r} is absolute; give it relative to the static root")
    parts = [p for p in PurePosixPath(path).parts if p != "."]
    if not parts or ".." in parts:
        raise InvalidInput(f"asset path {path!r} escapes the static root")
    return "/".join(parts)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def resolve_inside(root: Path, path: str) -> Path:
    """The file ``path`` under ``root``, after checking that it (and any symlink) stays inside."""
    relative = clean_relative(path)
    try:
        base = root.resolve()
        target = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise InvalidInput(f"asset path {path!r} cannot be resolved: {exc}") from None
    if not target.is_relative_to(base):
        raise InvalidInput(f"asset path {path!r} resolves outside the static root {base}")
    return target


def relative_url_path(url_path: str, static_url: str) -> str:
    """The asset path of ``url_path`` (``/static/js/app.js`` -> ``js/app.js``) under ``static_url``."""
    path = url_path.split("?", 1)[0].split("#", 1)[0]
    if path.startswith(static_url):
        path = path[len(static_url) :]
    elif path.startswith("/"):
        path = path[1:]
    return clean_relative(path)
