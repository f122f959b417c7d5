"""Reading ``git diff -U0``: which lines of which files a change added or modified."""

from __future__ import annotations

import pytest

from sluice.analysis.changes import ChangeSet, _added_lines, _unquote


@pytest.mark.parametrize(
    "printed,path",
    [
        (b"b/plain.py", "b/plain.py"),
        (b'"b/tab\\there.py"', "b/tab\there.py"),
        (b'"b/quote\\"d.py"', 'b/quote"d.py'),
        (b'"b/back\\\\slash.py"', "b/back\\slash.py"),
        (b'"b/\\303\\251t\\303\\251.py"', "b/été.py"),
        (b'"b/nl\\nx.py"', "b/nl\nx.py"),
    ],
)
def test_git_quoted_paths_are_read_back_exactly(printed: bytes, path: str) -> None:
    assert _unquote(printed) == path


def test_hunks_give_added_lines_and_deletions_none() -> None:
    patch = b"\n".join(
        [
            b"diff --git a/a.py b/a.py",
            b"--- a/a.py",
            b"+++ b/a.py",
            b"@@ -2 +2 @@",  # one line modified
            b"-x",
            b"+y",
            b"@@ -10,0 +11,3 @@",  # three lines added
            b"@@ -20,2 +22,0 @@",  # two lines deleted: nothing added
            b"diff --git a/gone.py b/gone.py",
            b"--- a/gone.py",
            b"+++ /dev/null",
            b"@@ -1,3 +0,0 @@",
            b'+++ "b/sp\\303\\251cial.py"',
            b"@@ -0,0 +1 @@",
        ]
    )
    assert _added_lines(patch) == {"a.py": {2, 11, 12, 13}, "spécial.py": {1}}


def test_a_finding_is_on_the_change_only_on_a_changed_line_or_for_the_whole_file() -> None:
    changes = ChangeSet("main", "0" * 40, {"a.py": {3}})
    assert changes.touches("a.py", 3) and changes.touches("a.py", 0)
    assert not changes.touches("a.py", 4) and not changes.touches("b.py", 3)
    assert "a.py" in changes and "b.py" not in changes
