"""Text heuristics shared by the Python (AST) and the pattern (regex) rule sets."""

from __future__ import annotations

import re
from collections.abc import Iterator

# Shapes of credentials issued by well-known services; a match is almost never a false positive.
KEY_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("an OpenAI-style API key", re.compile(r"\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
)

_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "apikey", "credential", "credentials"}
)
# Two-word names whose last word alone ("key") is too common to flag.
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("secret", "key"), ("access", "key"), ("private", "key"), ("auth", "key")}
)
_NAME_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# Template placeholders ("${DB_PASSWORD}", "{{ token }}", "<your-key>") are not secrets.
_PLACEHOLDER = re.compile(r"^\s*(?:\$\{.*\}|\{\{.*\}\}|<[^<>]*>|%\(\w+\)s)\s*$")

SQL_TEXT = re.compile(
    r"\b(?:select\b[\s\S]*\bfrom|insert\s+into|update\s+[\w.\"`\[\]]+\s+set|delete\s+from"
    r"|drop\s+table|alter\s+table|create\s+table)\b",
    re.IGNORECASE,
)

TODO_TEXT = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b")


def looks_like_secret_name(name: str) -> bool:
    """True for names such as ``password``, ``DB_PASSWORD``, ``apiKey`` or ``SECRET_KEY``.

    Only the last word counts, so ``token_type`` or ``PASSWORD_RESET_URL`` do not match.
    """
    parts = [part.lower() for part in _NAME_PARTS.findall(name)]
    if not parts:
        return False
    if parts[-1] in _SECRET_WORDS:
        return True
    return len(parts) >= 2 and (parts[-2], parts[-1]) in _SECRET_PAIRS


def looks_like_secret_value(value: str) -> bool:
    """True when a literal assigned to a secret-looking name could be a real credential."""
    return bool(value.strip()) and not _PLACEHOLDER.match(value)


def key_shapes(line: str) -> Iterator[tuple[int, str]]:
    """Yield ``(0-based column, description)`` for each well-known credential shape in ``line``."""
    for description, pattern in KEY_SHAPES:
        for match in pattern.finditer(line):
            yield match.start(), description
