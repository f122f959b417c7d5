"""Walk a source tree the way ``git`` sees it: no ``.git``, nothing ``.gitignore`` excludes,
no binary files, nothing over the size limit."""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from sluice.ai import detect_language
from sluice.errors import InvalidInput

ALWAYS_SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".ruff_cache"}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    """A file to analyse: its path relative to the root, its language and its text."""

    path: str
    language: str
    content: str


@dataclass
class WalkReport:
    """What the walk skipped and why (counts by reason, plus unreadable paths)."""

    skipped: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head


class _IgnoreRules:
    """Every ``.gitignore`` from the root down to a directory, each anchored at its own folder."""

    def __init__(self) -> None:
        self._specs: list[tuple[Path, GitIgnoreSpec]] = []

    def load(self, directory: Path) -> None:
        ignore_file = directory / ".gitignore"
        if ignore_file.is_file():
            try:
                lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                return
            self._specs.append((directory, GitIgnoreSpec.from_lines(lines)))

    def ignored(self, path: Path, is_dir: bool) -> bool:
        for base, spec in self._specs:
            try:
                relative = path.relative_to(base).as_posix()
            except ValueError:
                continue
            if spec.match_file(relative + "/" if is_dir else relative):
                return True
        return False


def walk_tree(
    root: str | os.PathLike[str],
    max_bytes: int,
    report: WalkReport,
    include: Callable[[str], bool] | None = None,
) -> Iterator[SourceFile]:
    """Yield every analysable file under ``root`` in a stable (sorted) order.

    Skips are counted in ``report``; an unreadable file is recorded there, never raised, so one bad
    file does not stop a run. ``root`` itself must exist: a file root yields just that file. Only
    regular files are opened (a named pipe or device would block or never end). ``include``, given a
    path relative to the root, leaves out the files it refuses (counted as "unchanged": ``--since``).
    """
    base = Path(root)
    if not base.exists():
        raise InvalidInput(f"path {str(root)!r} does not exist")
    base = base.resolve()
    if not base.is_dir():
        source = _read(base, base.name, max_bytes, report)
        if source:
            yield source
        return
    rules = _IgnoreRules()
    for directory, dirnames, filenames in os.walk(
        base, onerror=lambda e: report.unreadable.append(str(e.filename))
    ):
        here = Path(directory)
        rules.load(here)
        kept = []
        for name in sorted(dirnames):
            if name in ALWAYS_SKIPPED_DIRS or rules.ignored(here / name, is_dir=True):
                report.skipped["ignored"] += 1
            elif (here / name).is_symlink():
                report.skipped["symlink"] += 1
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = here / name
            if name == ".gitignore" or rules.ignored(path, is_dir=False):
                report.skipped["ignored"] += 1
                continue
            if path.is_symlink():
                report.skipped["symlink"] += 1
                continue
            relative = path.relative_to(base).as_posix()
            if include is not None and not include(relative):
                report.skipped["unchanged"] += 1
                continue
            source = _read(path, relative, max_bytes, report)
            if source:
                yield source


def _read(path: Path, relative: str, max_bytes: int, report: WalkReport) -> SourceFile | None:
    language = detect_language(path)
    if language is None:
        report.skipped["unknown language"] += 1
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            report.skipped["not a regular file"] += 1
            return None
        # O_NONBLOCK: should it have become a named pipe since, opening must not wait for a writer;
        # fstat then tells what was opened.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        report.unreadable.append(relative)
        return None
    with os.fdopen(descriptor, "rb") as handle:
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                report.skipped["not a regular file"] += 1
                return None
            if info.st_size > max_bytes:
                report.skipped["too large"] += 1
                return None
            data = handle.read(max_bytes + 1)
        except OSError:
            report.unreadable.append(relative)
            return None
    if len(data) > max_bytes:  # it grew after the fstat
        report.skipped["too large"] += 1
        return None
    if _is_binary(data[:_SNIFF_BYTES]):
        report.skipped["binary"] += 1
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        report.skipped["not utf-8"] += 1
        return None
    return SourceFile(path=relative, language=language, content=text)
