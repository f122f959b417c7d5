"""Review a change: which files, and which of their lines, changed since a git revision.

Uses the ``git`` command. The change is the work tree (committed, staged and unstaged edits, and new
untracked files that no ``.gitignore`` excludes) against the revision, so ``--since main`` on a branch
shows what a pull request into ``main`` would show, plus what is not committed yet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sluice.errors import InvalidInput

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass
class ChangeSet:
    """Paths (relative to the reviewed root) changed since ``revision``, with their added or modified
    line numbers (every line for a new file)."""

    revision: str
    commit: str
    lines: dict[str, set[int]] = field(default_factory=dict)

    def __contains__(self, path: object) -> bool:
        return path in self.lines

    def touches(self, path: str, line: int) -> bool:
        """Whether a finding at ``path:line`` is on a changed line (line 0: the whole file)."""
        changed = self.lines.get(path)
        return changed is not None and (line == 0 or line in changed)


def _git(cwd: Path, args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    program = shutil.which("git")
    if program is None:
        raise InvalidInput("--since needs the git command, which is not installed")
    return subprocess.run(  # noqa: S603 - fixed program, arguments are never shell-parsed
        [program, "-c", "core.quotePath=true", *args], cwd=cwd, capture_output=True, check=False
    )


def _unquote(path: bytes) -> str:
    """A path as git prints it in a patch: C-quoted when it holds special bytes."""
    if not path.startswith(b'"'):
        return path.decode("utf-8", "surrogateescape")
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i : i + 1]
        if char != b"\\":
            out += char
            i += 1
            continue
        following = body[i + 1 : i + 2].decode("latin-1")
        if following in _ESCAPES:
            out.append(_ESCAPES[following])
            i += 2
        else:  # three octal digits of one byte
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
    return out.decode("utf-8", "surrogateescape")


def changes_since(root: str | Path, revision: str) -> ChangeSet:
    """The files under ``root`` changed since ``revision`` (a branch, tag or commit).

    Raises :class:`InvalidInput` when ``root`` is not inside a git work tree, ``revision`` is not a
    commit of it, or ``git`` is not installed.
    """
    if not revision or revision.startswith("-"):
        raise InvalidInput(
            f"--since needs a git revision (branch, tag or commit), got {revision!r}"
        )
    base = Path(root).resolve()
    folder = base if base.is_dir() else base.parent
    inside = _git(folder, ["rev-parse", "--is-inside-work-tree"])
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        raise InvalidInput(f"--since needs a git work tree, and {str(root)!r} is not inside one")
    resolved = _git(
        folder, ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"]
    )
    if resolved.returncode != 0:
        raise InvalidInput(
            f"unknown git revision {revision!r} in {str(folder)!r}; use a branch, tag or commit "
            "(git rev-parse must resolve it)"
        )
    commit = resolved.stdout.decode().strip()
    diff = _git(
        folder,
        ["diff", "--relative", "--no-color", "--no-ext-diff", "--no-renames", "-U0", commit, "--"],
    )
    if diff.returncode != 0:
        raise InvalidInput(f"git diff against {revision!r} failed: {diff.stderr.decode().strip()}")
    changes = ChangeSet(revision=revision, commit=commit, lines=_added_lines(diff.stdout))
    untracked = _git(folder, ["ls-files", "-z", "--others", "--exclude-standard"])
    for raw in untracked.stdout.split(b"\0"):
        if raw:
            changes.lines[raw.decode("utf-8", "surrogateescape")] = _all_lines(
                folder / raw.decode("utf-8", "surrogateescape")
            )
    if base.is_file():
        changes.lines = {name: lines for name, lines in changes.lines.items() if name == base.name}
    return changes


def _added_lines(patch: bytes) -> dict[str, set[int]]:
    """``{path: added line numbers}`` from a ``-U0`` patch; deleted files are left out."""
    lines: dict[str, set[int]] = {}
    current: set[int] | None = None
    for raw in patch.split(b"\n"):
        if raw.startswith(b"+++ "):
            target = raw[4:]
            if target == b"/dev/null":
                current = None
            else:
                name = _unquote(target)
                current = lines.setdefault(name.removeprefix("b/"), set())
        elif raw.startswith(b"@@") and current is not None:
            match = _HUNK.match(raw.decode("utf-8", "replace"))
            if match:
                start, count = int(match.group(1)), int(match.group(2) or 1)
                current.update(range(start, start + count))
    return lines


def _all_lines(path: Path) -> set[int]:
    try:
        return set(range(1, path.read_bytes().count(b"\n") + 2))
    except OSError:
        return set()
