"""Analyse one file and store its findings: the body of the ``analysis`` handler."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from sluice.ai import AIProvider, AnalysisResult, get_provider
from sluice.cache import ANALYSIS, CacheKeyGenerator, get_ai_cache
from sluice.db import (
    AnalysisSession,
    AnalyzedFile,
    AuditLog,
    CodeReviewResult,
    FileEmbedding,
    session_scope,
)
from sluice.errors import CodecError, InvalidInput
from sluice.settings import get_settings


def analyze_source(
    session_id: int,
    path: str,
    content: str,
    language: str,
    rules: list[str] | None = None,
    provider: AIProvider | None = None,
) -> dict[str, Any]:
    """Run the provider on one file and write its findings, replacing any earlier write.

    Idempotent per ``(session_id, path)``: a redelivered task (late acks, a killed worker) rewrites
    the same rows instead of adding duplicates. Returns a JSON-safe summary for the task result.
    """
    item = {
        "session_id": session_id,
        "path": path,
        "content": content,
        "language": language,
        "rules": rules,
    }
    (outcome,) = analyze_sources([item], provider)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def analyze_sources(
    items: list[dict[str, Any]], provider: AIProvider | None = None
) -> list[dict[str, Any] | Exception]:
    """:func:`analyze_source` for many files: one summary per item, in order, and one transaction.

    An item is a dict of ``analyze_source``'s arguments (``session_id``, ``path``, ``content``,
    ``language``, ``rules``). An item that fails (bad input, a provider error) gets its exception in
    its slot and writes nothing; the others are stored together, each file's earlier rows replaced,
    so a redelivered chunk rewrites and never duplicates. A failed write raises.
    """
    settings = get_settings()
    active = provider or get_provider(settings)
    cache = get_ai_cache()
    outcomes: list[dict[str, Any] | Exception] = []
    reviewed: list[_Reviewed] = []
    for item in items:
        try:
            done = _review(item, active, cache, settings)
        except Exception as exc:  # this file alone fails (and is retried alone)
            outcomes.append(exc)
            continue
        reviewed.append(done)
        outcomes.append(done.summary)
    if reviewed:
        _store(reviewed)
    return outcomes


@dataclass
class _Reviewed:
    """One file's review, ready to store."""

    session_id: int
    path: str
    language: str
    content_sha256: str
    duration_ms: float
    result: AnalysisResult
    summary: dict[str, Any]


def _review(item: dict[str, Any], active: AIProvider, cache: Any, settings: Any) -> _Reviewed:
    session_id, path = item.get("session_id"), item.get("path")
    if not isinstance(session_id, int) or isinstance(session_id, bool) or session_id <= 0:
        raise InvalidInput(f"session_id must be a positive integer, got {session_id!r}")
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"path must be a non-empty string, got {path!r}")
    content, language, rules = item["content"], item["language"], item.get("rules")
    called = False

    def call_provider() -> dict[str, Any]:
        nonlocal called
        called = True
        return active.analyze(content, language, rules, settings.ai_model).to_dict()

    started = time.perf_counter()
    key = CacheKeyGenerator.analysis(
        content, language, rules, settings.ai_model, active.cache_identity("analysis")
    )
    cached = cache.sync.get_or_compute(
        ANALYSIS, key, call_provider, model=settings.ai_model, usage_of=lambda r: r.get("usage")
    )
    try:
        result = AnalysisResult.from_dict(cached)
    except CodecError:
        # A well-formed entry whose value is not an analysis (foreign or stale writer): drop it.
        cache.invalidate(key.key)
        cached = call_provider()
        result = AnalysisResult.from_dict(cached)
    hit = cache.enabled and not called
    summary = {
        "path": path,
        "findings": len(result.findings),
        "by_severity": dict(Counter(f.severity for f in result.findings)),
        "cache_hit": hit,
        "critical": [f.to_dict() for f in result.findings if f.severity == "critical"],
        "cost_saved_usd": cache.config.cost_usd(settings.ai_model, cached.get("usage"))
        if hit
        else 0.0,
    }
    return _Reviewed(
        session_id=session_id,
        path=path,
        language=language,
        content_sha256=hashlib.sha256(content.encode()).hexdigest(),
        duration_ms=(time.perf_counter() - started) * 1000,
        result=result,
        summary=summary,
    )


def _store(reviewed: list[_Reviewed]) -> None:
    """Replace the rows of every reviewed file in one transaction (bulk deletes and inserts)."""
    with session_scope() as db:
        pairs = [(done.session_id, done.path) for done in reviewed]
        delete_file_rows(db, CodeReviewResult, CodeReviewResult.file_path, pairs)
        delete_file_rows(db, AnalyzedFile, AnalyzedFile.path, pairs)
        db.execute(
            insert(AnalyzedFile),
            [
                {
                    "session_id": done.session_id,
                    "path": done.path,
                    "language": done.language,
                    "content_sha256": done.content_sha256,
                    "findings_count": len(done.result.findings),
                    "duration_ms": done.duration_ms,
                }
                for done in reviewed
            ],
        )
        findings = [
            {
                "session_id": done.session_id,
                "file_path": done.path,
                "line": f.line,
                "column": f.column,
                "rule": f.rule,
                "severity": f.severity,
                "message": f.message,
            }
            for done in reviewed
            for f in done.result.findings
        ]
        if findings:
            db.execute(insert(CodeReviewResult), findings)


def open_session(root: str, files_total: int, provider: str, model: str) -> int:
    """Create a ``running`` analysis session (migrating the database first); returns its id."""
    from sluice.db import upgrade

    upgrade()
    with session_scope() as db:
        row = AnalysisSession(
            status="running",
            root_path=root,
            provider=provider,
            model=model,
            files_total=files_total,
        )
        db.add(row)
        db.flush()
        return row.id


def close_session(session_id: int, status: str) -> list[dict[str, Any]]:
    """Mark a session ``status`` and finished now; returns its findings (see :func:`finding_of`).
    Raises :class:`InvalidInput` for a session that does not exist."""
    with session_scope() as db:
        session = db.get(AnalysisSession, session_id)
        if session is None:
            raise InvalidInput(f"no analysis session #{session_id}")
        session.status = status
        session.finished_at = datetime.now(UTC)
        rows = db.scalars(
            select(CodeReviewResult).where(CodeReviewResult.session_id == session_id)
        ).all()
        return [finding_of(row) for row in rows]


def finding_of(row: CodeReviewResult) -> dict[str, Any]:
    """A stored finding as the plain dict every output format reads."""
    return {
        "path": row.file_path,
        "line": row.line,
        "column": row.column,
        "severity": row.severity,
        "rule": row.rule,
        "message": row.message,
    }


def store_embeddings(stored: list[tuple[dict[str, Any], Any]], model: str) -> None:
    """Replace the embedding rows of each ``(payload, vector)`` in one transaction."""
    with session_scope() as db:
        pairs = [(p["session_id"], p["path"]) for p, _ in stored]
        delete_file_rows(db, FileEmbedding, FileEmbedding.path, pairs)
        db.execute(
            insert(FileEmbedding),
            [
                {"session_id": p["session_id"], "path": p["path"], "model": model, "vector": vector}
                for p, vector in stored
            ],
        )


def record_security_alert(session_id: Any, path: Any, findings: list[Any]) -> None:
    """Write critical findings of one file to the audit log."""
    with session_scope() as db:
        db.add(
            AuditLog(
                entity_type="analysis_session",
                entity_id=str(session_id or ""),
                action="security_alert",
                details={"path": path, "findings": findings},
            )
        )


def delete_file_rows(
    db: Session,
    model: type[AnalyzedFile | CodeReviewResult | FileEmbedding],
    path_column: Any,
    pairs: Iterable[tuple[int, str]],
) -> None:
    """Delete ``model``'s rows of each ``(session_id, path)``: one statement per session, so a
    redelivered chunk's rewrite costs a round trip, not one per file."""
    by_session: dict[int, list[str]] = {}
    for session_id, path in pairs:
        by_session.setdefault(session_id, []).append(path)
    for session_id, paths in by_session.items():
        db.execute(delete(model).where(model.session_id == session_id, path_column.in_(paths)))


def prune_sessions(older_than_days: float | None = None) -> int:
    """Delete sessions created more than ``older_than_days`` ago; return how many were deleted."""
    days = get_settings().retention_days if older_than_days is None else older_than_days
    if days <= 0:
        raise InvalidInput(f"older_than_days must be positive, got {days}")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    with session_scope() as db:
        old = select(AnalysisSession.id).where(AnalysisSession.created_at < cutoff)
        # Children first, so the delete does not depend on ON DELETE CASCADE support.
        for model, column in (
            (CodeReviewResult, CodeReviewResult.session_id),
            (AnalyzedFile, AnalyzedFile.session_id),
        ):
            db.execute(delete(model).where(column.in_(old)))
        result = db.execute(delete(AnalysisSession).where(AnalysisSession.created_at < cutoff))
        return int(result.rowcount)  # type: ignore[attr-defined]  # a DELETE gives a CursorResult
