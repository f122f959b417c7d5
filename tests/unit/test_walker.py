import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.analysis import WalkReport, walk_tree, walker
from sluice.errors import InvalidInput


def _tree(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def test_walk_skips_git_ignored_binary_and_large_files(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "app/main.py": "print('hi')\n",
            "app/web.js": "eval(x)\n",
            "app/logo.py": b"\x89PNG\x00\x00binary",
            "app/big.py": "x = 1\n" * 1000,
            "build/out.py": "eval(1)\n",
            "app/sub/.gitignore": "generated_*.py\n",
            "app/sub/generated_x.py": "eval(2)\n",
            "app/sub/kept.py": "y = 2\n",
            ".git/hooks/pre-commit.py": "eval(3)\n",
            "README.md": "docs\n",
            ".gitignore": "build/\n",
            "latin1.py": "s = '\xe9'\n".encode("latin-1"),
        },
    )
    report = WalkReport()
    files = list(walk_tree(tmp_path, max_bytes=1000, report=report))
    assert [f.path for f in files] == ["app/main.py", "app/web.js", "app/sub/kept.py"]
    assert [f.language for f in files] == ["python", "javascript", "python"]
    assert files[0].content == "print('hi')\n"
    assert report.skipped["binary"] == 1
    assert report.skipped["too large"] == 1
    assert report.skipped["not utf-8"] == 1
    assert report.skipped["unknown language"] == 1
    # build/ (root .gitignore), .git, generated_x.py (nested .gitignore), two .gitignore files
    assert report.skipped["ignored"] == 5


def test_unreadable_file_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, {"ok.py": "a = 1\n", "secret.py": "b = 2\n"})
    real_open = os.open

    def open_file(path: Any, flags: int, *args: Any) -> int:
        if Path(path).name == "secret.py":  # chmod 0 does not stop root, so fail the open itself
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(walker.os, "open", open_file)
    report = WalkReport()
    files = list(walk_tree(tmp_path, max_bytes=1000, report=report))
    assert [f.path for f in files] == ["ok.py"]
    assert report.unreadable == ["secret.py"]


def test_missing_path_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        list(walk_tree(tmp_path / "nope", max_bytes=10, report=WalkReport()))


def test_single_file_root(tmp_path: Path) -> None:
    _tree(tmp_path, {"one.py": "eval('1')\n"})
    files = list(walk_tree(tmp_path / "one.py", max_bytes=100, report=WalkReport()))
    assert [(f.path, f.language) for f in files] == [("one.py", "python")]


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_only_regular_files_are_opened(tmp_path: Path, kind: str) -> None:
    """A named pipe would block the walk forever (nobody writes to it); a socket cannot be read."""
    _tree(tmp_path, {"ok.py": "a = 1\n"})
    special = tmp_path / "pipe.py"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    report = WalkReport()
    files = list(walk_tree(tmp_path, max_bytes=1000, report=report))
    assert [f.path for f in files] == ["ok.py"]
    assert report.skipped["not a regular file"] == 1
    # A special file given as the root itself is skipped the same way.
    assert list(walk_tree(special, max_bytes=1000, report=WalkReport())) == []


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=12,
        ).filter(lambda n: n not in (".", "..") and not n.startswith(".")),
        min_size=1,
        max_size=5,
        unique_by=lambda n: n.casefold(),
    ),
    content=st.text(max_size=50),
)
def test_any_file_name_and_content_is_walked_without_error(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], content: str
) -> None:
    """Markup, control characters, odd Unicode in names and contents: yielded or skipped, never
    raised. Every ``.py`` file whose content is text comes back under its own name."""
    root = tmp_path_factory.mktemp("walk")
    for name in names:
        (root / f"{name}.py").write_text(content, encoding="utf-8")
    report = WalkReport()
    found = {f.path: f.content for f in walk_tree(root, max_bytes=10_000, report=report)}
    expected = {f"{n}.py" for n in names} if "\x00" not in content else set()
    assert set(found) == expected
    assert all(text == content for text in found.values())
