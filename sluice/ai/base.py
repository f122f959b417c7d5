"""The value types every AI provider returns, and the :class:`AIProvider` protocol they share.

Results cross process boundaries (Celery messages, the result cache), so they are frozen dataclasses
with ``to_dict``/``from_dict`` that produce and accept plain JSON types only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sluice.errors import CodecError

#: Finding severities, most severe first; the index is the rank used for sorting.
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class Finding:
    """One problem in a piece of code.

    ``line`` and ``column`` are 1-based; 0 means "the whole file" or "unknown column".
    """

    line: int
    rule: str
    severity: str
    message: str
    column: int = 0

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.line < 0 or self.column < 0:
            raise ValueError(f"line and column must be >= 0, got {self.line}:{self.column}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            line=int(data["line"]),
            rule=str(data["rule"]),
            severity=str(data["severity"]),
            message=str(data["message"]),
            column=int(data.get("column", 0)),
        )


def sort_findings(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Order by position, then most severe first, so reports read top to bottom."""
    return tuple(
        sorted(findings, key=lambda f: (f.line, f.column, SEVERITIES.index(f.severity), f.rule))
    )


@dataclass(frozen=True)
class Usage:
    """Token counts of one provider call (estimated by the local provider)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            total_tokens=int(data.get("total_tokens", 0)),
        )


@dataclass(frozen=True)
class AnalysisResult:
    """The findings of one ``analyze`` call, sorted by line."""

    findings: tuple[Finding, ...]
    language: str
    model: str
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for Celery messages and the cache); inverse of :meth:`from_dict`."""
        return {
            "findings": [finding.to_dict() for finding in self.findings],
            "language": self.language,
            "model": self.model,
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisResult:
        """Rebuild a result; raise :class:`CodecError` when ``data`` is not one."""
        try:
            return cls(
                findings=tuple(Finding.from_dict(item) for item in data["findings"]),
                language=str(data["language"]),
                model=str(data["model"]),
                usage=Usage.from_dict(data.get("usage") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"not a serialised AnalysisResult: {exc!r}") from None


@dataclass(frozen=True)
class EmbeddingResult:
    """One vector per input text, in input order."""

    vectors: list[list[float]]
    model: str
    usage: Usage


@dataclass(frozen=True)
class Completion:
    """The assistant's reply to a chat conversation."""

    text: str
    model: str
    usage: Usage
    finish_reason: str | None


@runtime_checkable
class AIProvider(Protocol):
    """What sluice needs from a model backend. Every method is synchronous (Celery tasks are)."""

    name: str

    def analyze(
        self,
        code: str,
        language: str,
        rules: Sequence[str] | None = None,
        model: str | None = None,
    ) -> AnalysisResult:
        """Review ``code``; ``rules`` restricts findings to categories or rule ids (None: all)."""
        ...

    def embed(self, texts: Sequence[str], model: str | None = None) -> EmbeddingResult:
        """Embed every text in one batch call; vectors come back in input order."""
        ...

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        **params: Any,
    ) -> Completion:
        """Answer a chat conversation of ``{"role": ..., "content": ...}`` messages."""
        ...

    def cache_identity(self, kind: str) -> dict[str, Any]:
        """Everything of this provider that shapes a ``kind`` result (analysis, embedding,
        response): its name, where it runs, its models and a digest of its rules or prompt.

        Part of every cache key, so a changed rule set or prompt never serves old results;
        transport settings (timeouts, retries, keys) are left out, since they change no answer.
        """
        ...


def source_digest(paths: Iterable[Path]) -> str:
    """A short digest of files' contents: the version of the code that produces some results."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\x00" + path.read_bytes() + b"\x00")
    return digest.hexdigest()[:16]
