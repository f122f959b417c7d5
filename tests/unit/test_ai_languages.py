from __future__ import annotations

from pathlib import Path

import pytest

from sluice.ai import LANGUAGES, detect_language, normalize_language


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("app/views.py", "python"),
        ("stubs/mod.pyi", "python"),
        ("web/app.js", "javascript"),
        ("web/App.JSX", "javascript"),
        ("web/server.mjs", "javascript"),
        ("src/index.ts", "typescript"),
        ("src/App.tsx", "typescript"),
        ("cmd/main.go", "go"),
        ("Main.java", "java"),
        ("lib/task.rb", "ruby"),
        ("index.php", "php"),
        ("src/main.c", "c"),
        ("include/util.h", "c"),
        ("src/engine.cpp", "cpp"),
        ("include/engine.hpp", "cpp"),
        ("Program.cs", "csharp"),
        ("src/lib.rs", "rust"),
        ("scripts/deploy.sh", "shell"),
        ("migrations/001.sql", "sql"),
        ("docker/Dockerfile", "dockerfile"),
        (Path("nested/dir/module.py"), "python"),
    ],
)
def test_detects_language_from_extension(path: str | Path, language: str) -> None:
    assert detect_language(path) == language
    assert language in LANGUAGES


@pytest.mark.parametrize(
    "path", ["README", "logo.png", "archive.tar.gz", ".gitignore", "notes.txt"]
)
def test_unknown_files_have_no_language(path: str) -> None:
    assert detect_language(path) is None


@pytest.mark.parametrize(
    ("alias", "language"),
    [
        ("py", "python"),
        ("JS", "javascript"),
        ("c++", "cpp"),
        ("golang", "go"),
        ("Python", "python"),
    ],
)
def test_normalize_language_maps_aliases(alias: str, language: str) -> None:
    assert normalize_language(alias) == language


def test_normalize_language_passes_unknown_names_through() -> None:
    assert normalize_language(" Haskell ") == "haskell"
