"""The one function that removes secrets from text: :func:`redact`.

Every message sluice shows or stores passes through it: :class:`sluice.errors.SluiceError` redacts
its own message, the log filter redacts every record, ``sluice config`` and ``/health`` redact the
URLs they print. It masks passwords in URLs (well-formed or not: a password containing ``/`` or
``@``, a URL with a bad port), bearer tokens, ``key=value`` credentials, OpenAI-style keys, and the
exact values of the secrets a process is configured with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_PATTERNS = (
    # scheme://user:password@host -> scheme://user:***@host. The password runs to the last "@"
    # of the token, so one containing "/", ":" or "@" is masked whole, not cut at its first "/".
    (
        re.compile(
            r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^\s:@/'\"]*:)[^\s'\"]*(?=@)",
            re.I,
        ),
        rf"\g<keep>{MASK}",
    ),
    (re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.I), rf"\g<keep>{MASK}"),
    (
        re.compile(
            r"(?P<keep>\b[\w-]*(?:api[_-]?key|token|secret|password|passwd|pwd)[\"']?\s*[=:]\s*[\"']?)"
            r"[^\s\"',;&}]+",
            re.I,
        ),
        rf"\g<keep>{MASK}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret in ``secrets`` and every credential-looking substring masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
