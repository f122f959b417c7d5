"""Analyse one file and store its findings: the body of the ``analysis`` handler."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from sluice.ai import AIProvider, AnalysisResult, get_provider
from sluice.cache import ANALYSIS, CacheKeyGenerator, get_ai_cache
from sluice.db import AnalysisSession, AnalyzedFile, CodeReviewResult, session_scope
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
    if not isinstance(session_id, int) or session_id <= 0:
        raise InvalidInput(f"session_id must be a positive integer, got {session_id!r}")
    if not path:
        raise InvalidInput("path must not be empty")
    settings = get_settings()
    active = provider or get_provider(settings)
    cache = get_ai_cache()
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
    duration_ms = (time.perf_counter() - started) * 1000
    with session_scope() as db:
        db.execute(
            delete(CodeReviewResult).where(
                CodeReviewResult.session_id == session_id, CodeReviewResult.file_path == path
            )
        )
        db.execute(
            delete(AnalyzedFile).where(
                AnalyzedFile.session_id == session_id, AnalyzedFile.path == path
            )
        )
        db.add(
            AnalyzedFile(
                session_id=session_id,
                path=path,
                language=language,
                content_sha256=hashlib.sha256(content.encode()).hexdigest(),
                findings_count=len(result.findings),
                duration_ms=duration_ms,
            )
        )
        db.add_all(
            CodeReviewResult(
                session_id=session_id,
                file_path=path,
                line=f.line,
                column=f.column,
                rule=f.rule,
                severity=f.severity,
                message=f.message,
            )
            for f in result.findings
        )
    hit = cache.enabled and not called
    return {
        "path": path,
        "findings": len(result.findings),
        "by_severity": dict(Counter(f.severity for f in result.findings)),
        "cache_hit": hit,
        "critical": [f.to_dict() for f in result.findings if f.severity == "critical"],
        "cost_saved_usd": cache.config.cost_usd(settings.ai_model, cached.get("usage"))
        if hit
        else 0.0,
    }


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
