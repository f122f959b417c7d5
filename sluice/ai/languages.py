"""Map file names to the language names every provider and rule set uses."""

from __future__ import annotations

import os
from pathlib import PurePath

_EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".rb": "ruby",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
    ".cs": "csharp",
    ".rs": "rust",
    ".swift": "swift",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".sql": "sql",
    ".lua": "lua",
    ".pl": "perl",
    ".pm": "perl",
    ".r": "r",
    ".html": "html",
    ".htm": "html",
    ".css": "css",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".toml": "toml",
}

_FILENAMES: dict[str, str] = {
    "dockerfile": "dockerfile",
    "makefile": "make",
    "gemfile": "ruby",
    "rakefile": "ruby",
}

# Names people and models commonly use for the same language.
_ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "rb": "ruby",
    "c++": "cpp",
    "cxx": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "rs": "rust",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "yml": "yaml",
}

#: Every language name :func:`detect_language` can return.
LANGUAGES: frozenset[str] = frozenset(_EXTENSIONS.values()) | frozenset(_FILENAMES.values())


def detect_language(path: str | os.PathLike[str]) -> str | None:
    """The language of ``path`` from its extension (or well-known file name); None when unknown."""
    name = PurePath(path).name.lower()
    if name in _FILENAMES:
        return _FILENAMES[name]
    return _EXTENSIONS.get(PurePath(name).suffix)


def normalize_language(language: str) -> str:
    """Canonical name of ``language`` (``"JS"`` -> ``"javascript"``); unknown names pass as is."""
    key = language.strip().lower()
    return _ALIASES.get(key, key)
