"""Content-addressed asset names: hashes, the manifest and reference rewriting.

Two URL styles are supported: ``query`` (``app.js?v=<hash>``, the guide's) and ``filename``
(``app.<hash>.js``, Django's ManifestStaticFilesStorage). A build copies a source tree to an output
tree, rewriting the references inside CSS (``url()``, ``@import``) and source-map comments to the
versioned names. Because a stylesheet's hash depends on the hashes of what it references, files
are processed depth-first; a reference cycle falls back to the referenced file's unrewritten hash
instead of looping. Rewriting works on bytes, so any ASCII-compatible CSS encoding survives
untouched. A reference to a missing file is reported (or raises in strict mode); it never crashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sluice.cdn.paths import clean_relative
from sluice.cdn.policies import extension
from sluice.errors import InvalidInput

log = logging.getLogger(__name__)

MANIFEST_NAME = "sluice-manifest.json"
MANIFEST_VERSION = 1
#: Outputs of the compressor and hidden files are never treated as source assets.
SKIPPED_SUFFIXES = (".gz", ".br")

_CSS_REFERENCES = (
    re.compile(rb"""url\(\s*(?P<q>["']?)(?P<ref>[^"')\s]+)(?P=q)\s*\)""", re.IGNORECASE),
    re.compile(rb"""@import\s+(?P<q>["'])(?P<ref>[^"']+)(?P=q)""", re.IGNORECASE),
)
_SOURCE_MAP = re.compile(rb"(?P<q>)[#@]\s*sourceMappingURL=(?P<ref>[^\s*'\"]+)")
_EXTERNAL = (b"data:", b"http:", b"https:", b"//", b"#", b"about:", b"blob:")


@dataclass(frozen=True)
class MissingReference:
    """A reference in ``source`` to ``reference`` that could not be versioned, and why."""

    source: str
    reference: str
    reason: str


@dataclass
class Manifest:
    """What a build produced: each asset's hash and versioned path, and what could not be versioned.

    :ivar style: ``query`` or ``filename``.
    :ivar hashes: asset path -> content hash.
    :ivar paths: asset path -> versioned path (``js/app.js?v=<hash>`` or ``js/app.<hash>.js``).
    """

    style: str
    hashes: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    missing: list[MissingReference] = field(default_factory=list)
    written: int = 0

    def to_json(self) -> str:
        """The manifest file's content (JSON, sorted so that identical builds are identical)."""
        body = {
            "version": MANIFEST_VERSION,
            "style": self.style,
            "paths": self.paths,
            "hashes": self.hashes,
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest written by a build; :class:`InvalidInput` if it is not one."""
        try:
            body = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read manifest {path}: {exc}") from None
        if not isinstance(body, dict) or body.get("version") != MANIFEST_VERSION:
            raise InvalidInput(f"{path} is not a version {MANIFEST_VERSION} sluice manifest")
        return cls(style=body["style"], hashes=dict(body["hashes"]), paths=dict(body["paths"]))


class ResourceVersioner:
    """Content hashes and versioned names for static assets.

    :param static_url: URL prefix of the assets (absolute references under it are rewritten).
    :param style: ``query`` or ``filename``.
    :param hash_length: hex digits of the SHA-256 kept in names.
    :param strict: raise :class:`InvalidInput` on a missing reference instead of reporting it.
    """

    def __init__(
        self,
        static_url: str = "/static/",
        style: str = "query",
        hash_length: int = 12,
        strict: bool = False,
    ) -> None:
        if style not in {"query", "filename"}:
            raise InvalidInput(f"URL style must be 'query' or 'filename', got {style!r}")
        self.static_url = static_url
        self.style = style
        self.hash_length = hash_length
        self.strict = strict
        self._file_hashes: dict[tuple[str, int, int], str] = {}

    def hash_bytes(self, data: bytes) -> str:
        """The content hash of ``data``."""
        return hashlib.sha256(data).hexdigest()[: self.hash_length]

    def hash_file(self, path: Path | str) -> str:
        """The content hash of the file ``path``, memoised on its size and mtime."""
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
        digest = self._file_hashes.get(key)
        if digest is None:
            digest = self._file_hashes[key] = self.hash_bytes(Path(path).read_bytes())
        return digest

    def hashed_name(self, path: str, digest: str) -> str:
        """``js/app.js`` -> ``js/app.<digest>.js``."""
        stem, ext = posixpath.splitext(path)
        return f"{stem}.{digest}{ext}"

    def versioned_path(self, path: str, digest: str) -> str:
        """The versioned form of ``path`` in this versioner's style."""
        if self.style == "filename":
            return self.hashed_name(path, digest)
        return f"{path}?v={digest}"

    # -- building a tree ---------------------------------------------------------------------------

    def build(self, source: Path, output: Path) -> Manifest:
        """Copy ``source`` to ``output`` with versioned names and rewritten references.

        Unchanged outputs are not rewritten, so their mtimes (and the compressor's incremental
        state) survive a rebuild. The manifest is written to ``output/sluice-manifest.json``.
        """
        source = source.resolve()
        if not source.is_dir():
            raise InvalidInput(f"static source {source} is not a directory")
        if output.resolve().is_relative_to(source):
            raise InvalidInput(f"build output {output} must not be inside the source {source}")
        files = dict(_walk(source))
        build = _Build(self, files)
        resolved = {rel: build.resolve(rel) for rel in sorted(files)}
        missing = list(dict.fromkeys(build.missing))
        if missing:
            listed = "; ".join(f"{m.source}: {m.reference} ({m.reason})" for m in missing[:5])
            message = f"{len(missing)} unresolved reference(s): {listed}"
            if self.strict:  # before anything is written, so a strict failure leaves no half build
                raise InvalidInput(message)
            log.warning("%s", message)
        manifest = Manifest(style=self.style, missing=missing)
        for rel, (digest, content) in resolved.items():
            manifest.hashes[rel] = digest
            manifest.paths[rel] = self.versioned_path(rel, digest)
            targets = [rel] + ([self.hashed_name(rel, digest)] if self.style == "filename" else [])
            manifest.written += sum(_write_if_changed(output / t, content) for t in targets)
        _write_if_changed(output / MANIFEST_NAME, manifest.to_json().encode())
        return manifest


class _Build:
    """One build's state: file contents, resolved hashes, and the depth-first rewriting."""

    def __init__(self, versioner: ResourceVersioner, files: dict[str, Path]) -> None:
        self.versioner = versioner
        self.files = files
        self.done: dict[str, tuple[str, bytes]] = {}
        self.in_progress: set[str] = set()
        self.missing: list[MissingReference] = []

    def resolve(self, rel: str) -> tuple[str, bytes]:
        """The hash and final content of ``rel``, resolving what it references first."""
        if rel in self.done:
            return self.done[rel]
        content = self.files[rel].read_bytes()
        patterns = _CSS_REFERENCES if extension(rel) == "css" else ()
        if extension(rel) in {"css", "js", "mjs"}:
            patterns = (*patterns, _SOURCE_MAP)
        if patterns:
            self.in_progress.add(rel)
            for pattern in patterns:
                content = pattern.sub(lambda m: self._rewrite(rel, m), content)
            self.in_progress.discard(rel)
        result = self.done[rel] = (self.versioner.hash_bytes(content), content)
        return result

    def _rewrite(self, source: str, match: re.Match[bytes]) -> bytes:
        ref = match.group("ref")
        if ref.lower().startswith(_EXTERNAL):
            return match.group(0)
        new = self._versioned_reference(source, ref)
        if new is None:
            return match.group(0)
        start, end = match.span("ref")
        whole_start = match.start()
        text = match.group(0)
        return text[: start - whole_start] + new + text[end - whole_start :]

    def _versioned_reference(self, source: str, ref: bytes) -> bytes | None:
        try:
            text = ref.decode("utf-8")
        except UnicodeDecodeError:
            return self._report(source, ref.decode("utf-8", "replace"), "not valid UTF-8")
        path, hash_sep, fragment = text.partition("#")
        path, query_sep, query = path.partition("?")
        static_url = self.versioner.static_url
        if path.startswith(static_url):
            target = path[len(static_url) :]
        elif path.startswith("/"):
            return None  # an absolute URL outside the static tree is not ours to version
        else:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        try:
            target = clean_relative(target)
        except InvalidInput:
            return self._report(source, text, "points outside the static root")
        if target not in self.files:
            return self._report(source, text, "no such file")
        if target in self.in_progress:
            # A cycle: version with the unrewritten content, which is stable and terminates.
            digest = self.versioner.hash_bytes(self.files[target].read_bytes())
        else:
            digest = self.resolve(target)[0]
        if self.versioner.style == "filename":
            new = posixpath.join(
                posixpath.dirname(path),
                posixpath.basename(self.versioner.hashed_name(target, digest)),
            )
            new += query_sep + query
        else:
            new = f"{path}?v={digest}" + (f"&{query}" if query else "")
        return (new + hash_sep + fragment).encode("utf-8")

    def _report(self, source: str, reference: str, reason: str) -> bytes | None:
        """Record an unresolvable reference; None leaves it as written."""
        self.missing.append(MissingReference(source, reference, reason))
        return None


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every asset under ``root`` as (relative path, file); a symlink leading outside is refused."""
    for directory, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES) or name == MANIFEST_NAME:
                continue
            path = Path(directory, name)
            if not path.resolve().is_relative_to(root):
                raise InvalidInput(f"{path} is a symlink to outside the static root {root}")
            if path.is_file():
                yield path.relative_to(root).as_posix(), path


def _write_if_changed(path: Path, content: bytes) -> bool:
    """Write ``content`` atomically unless the file already holds it; True when written."""
    try:
        if path.stat().st_size == len(content) and path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return True
