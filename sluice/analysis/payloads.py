"""What the main job's tasks carry for one file: the ``analysis`` and ``embedding`` payloads.

Built by ``sluice analyze`` (:mod:`sluice.analysis.runner`) and read by the handlers
(:mod:`sluice.analysis.service`); neither side imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.analysis.walker import SourceFile

#: Characters of each file that go into its embedding.
EMBED_CHARS = 8000


def analysis_payload(
    session_id: int,
    source: SourceFile,
    rules: list[str] | None,
    embed: bool,
    content_ref: str | None = None,
) -> dict[str, Any]:
    """Review ``source`` in session ``session_id``; ``embed``: embed it in the same task too.
    ``content_ref``: its text's claim check (:mod:`sluice.analysis.sources`), sent instead of it."""
    payload: dict[str, Any] = {
        "session_id": session_id,
        "path": source.path,
        "language": source.language,
        "rules": rules,
    }
    if content_ref is None:
        payload["content"] = source.content
    else:
        payload["content_ref"] = content_ref
    if embed:
        payload["embed"] = True
    return payload


def embedding_payload(session_id: int, source: SourceFile) -> dict[str, Any]:
    """Embed ``source`` (its first :data:`EMBED_CHARS` characters) in session ``session_id``."""
    return {"session_id": session_id, "path": source.path, "text": source.content[:EMBED_CHARS]}
