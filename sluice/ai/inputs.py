"""Argument checks shared by every provider, so both fail the same way on the same bad input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sluice.errors import InvalidInput

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def check_code(code: object, language: object) -> None:
    """Raise :class:`InvalidInput` unless ``code`` is a str and ``language`` a non-empty str."""
    if not isinstance(code, str):
        raise InvalidInput(
            f"code must be a str, got {type(code).__name__}; decode bytes first (e.g. as UTF-8)"
        )
    if not isinstance(language, str) or not language.strip():
        raise InvalidInput(
            "language must be a non-empty str such as 'python'; "
            "use sluice.ai.detect_language(path) to derive it from a file name"
        )


def check_texts(texts: object) -> list[str]:
    """``texts`` as a list; :class:`InvalidInput` if it is empty or holds a non-str."""
    # A bare str is a Sequence too; embedding it character by character is never what was meant.
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise InvalidInput("texts must be a list of str (wrap a single text in a list)")
    if not texts:
        raise InvalidInput("texts is empty; pass at least one text to embed")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"texts[{index}] is a {type(text).__name__}, not a str")
    return list(texts)


def check_messages(messages: object) -> list[Mapping[str, Any]]:
    """Return the messages as a list, or raise :class:`InvalidInput` naming the first bad one."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise InvalidInput(
            'messages must be a list of {"role": ..., "content": ...} mappings, '
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidInput("messages is empty; pass at least one user message")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"messages[{index}] must be a mapping, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidInput(
                f"messages[{index}] has role {role!r}; expected one of {', '.join(sorted(ROLES))}"
            )
        content = message.get("content")
        # OpenAI also accepts a list of content parts, and None on assistant tool-call turns.
        if not (isinstance(content, str | list) or (content is None and role == "assistant")):
            raise InvalidInput(
                f"messages[{index}] content must be a str (or a list of content parts), "
                f"got {type(content).__name__}"
            )
    return list(messages)


def message_text(message: Mapping[str, Any]) -> str:
    """The plain text of a message, joining the text parts of a multi-part content list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token: close enough for cost accounting of local calls."""
    return (len(text) + 3) // 4
