from pathlib import Path

import pytest

from sluice.analysis import WalkReport, walk_tree
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
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.py":  # chmod 0 does not stop root, so fail the read itself
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
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
