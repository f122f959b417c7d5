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
from sluice.analysis.payloads import EMBED_CHARS
from sluice.analysis.sources import SOURCE_PATIENCE, resolve_sources
from sluice.cache import ANALYSIS, EMBEDDING, CacheKey, CacheKeyGenerator, get_ai_cache
from sluice.db import (
    AnalysisSession,
    AnalyzedFile,
    AuditLog,
    CodeReviewResult,
    FileEmbedding,
    session_scope,
)
from sluice.errors import CodecError, InvalidInput, SluiceError
from sluice.settings import Settings, get_settings
from sluice.store import get_store


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
    ``language``, ``rules``; or ``content_ref`` instead of ``content``, the claim check of a text in
    the store, see :mod:`sluice.analysis.sources`), and ``embed``: true to embed the file too (its first
    :data:`EMBED_CHARS` characters, through the cache) and store the vector in the same
    transaction, its summary then saying ``"embedded": true``. An item that fails (bad input, a
    provider error) gets its exception in its slot and writes nothing; the others are stored
    together, each file's earlier rows replaced, so a redelivered chunk rewrites and never
    duplicates. A failed write, or a failed embedding call, raises (the chunk's files are then
    retried alone).
    """
    settings = get_settings()
    active = provider or get_provider(settings)
    cache = get_ai_cache()
    identity = active.cache_identity("analysis")
    outcomes: list[dict[str, Any] | Exception] = []
    keys: dict[int, CacheKey] = {}
    resolved: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(_with_sources(items)):
        if isinstance(item, Exception):
            outcomes.append(item)
            continue
        resolved[index] = item
        try:
            keys[index] = _analysis_key(item, settings.ai_model, identity)
        except Exception as exc:  # this file alone fails (and is retried alone)
            outcomes.append(exc)
            continue
        outcomes.append({})  # its summary, below
    # Every file's cached review in one round trip to L2 (a file each was a round trip each).
    looked = cache.sync.found_many(ANALYSIS, list(keys.values()))
    reviewed: list[_Reviewed] = []
    for (index, key), (found, cached) in zip(keys.items(), looked, strict=True):
        try:
            done = _review(resolved[index], key, found, cached, active, cache, settings)
        except Exception as exc:
            outcomes[index] = exc
            continue
        reviewed.append(done)
        outcomes[index] = done.summary
    to_embed = [done for done in reviewed if done.embed_text is not None]
    vectors: list[list[float]] = []
    if to_embed:
        texts = [done.embed_text or "" for done in to_embed]
        vectors = [vector for vector, _ in embed_texts(texts, active, settings)]
        for done in to_embed:
            done.summary["embedded"] = True
    if reviewed:
        _store(reviewed, list(zip(to_embed, vectors, strict=True)), embedding_model(settings))
    return outcomes


def _with_sources(items: list[dict[str, Any]]) -> list[dict[str, Any] | SluiceError]:
    """The items with their claim-checked sources fetched (one round trip), or as they are."""
    if not any("content_ref" in item for item in items):
        return list(items)
    return resolve_sources(get_store(), items, SOURCE_PATIENCE)


def embedding_model(settings: Settings) -> str | None:
    """The embedding model a provider is asked for (``None``: the provider's own)."""
    return settings.ai_embedding_model if settings.ai_provider == "openai" else None


def embed_texts(
    texts: list[str], provider: AIProvider, settings: Settings
) -> list[tuple[list[float], bool]]:
    """``(vector, from the cache)`` per text, in order: cached vectors first, the rest in one
    provider call (then cached)."""
    cache = get_ai_cache()
    model = embedding_model(settings)
    identity = provider.cache_identity("embedding")
    vectors = cache.sync.get_embeddings(texts, model, provider=identity)
    missing = [i for i, vector in enumerate(vectors) if vector is None]
    if missing:
        fresh = provider.embed([texts[i] for i in missing], model)
        for i, vector in zip(missing, fresh.vectors, strict=True):
            vectors[i] = vector
        cache.sync.set_embeddings(
            [texts[i] for i in missing], fresh.vectors, model, provider=identity
        )
        cache.stats.incr(EMBEDDING, "provider_calls")
    computed = set(missing)
    return [(vector or [], i not in computed) for i, vector in enumerate(vectors)]


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
    #: What to embed of the file (``None``: not asked to).
    embed_text: str | None


def _analysis_key(item: dict[str, Any], model: str, identity: dict[str, Any]) -> CacheKey:
    """The cache key of an item's review; :class:`InvalidInput` for an item that is not one."""
    session_id, path = item.get("session_id"), item.get("path")
    if not isinstance(session_id, int) or isinstance(session_id, bool) or session_id <= 0:
        raise InvalidInput(f"session_id must be a positive integer, got {session_id!r}")
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"path must be a non-empty string, got {path!r}")
    embed = item.get("embed", False)
    if not isinstance(embed, bool):
        raise InvalidInput(f"embed must be true or false, got {embed!r}")
    return CacheKeyGenerator.analysis(
        item["content"], item["language"], item.get("rules"), model, identity
    )


def _review(
    item: dict[str, Any],
    key: CacheKey,
    found: bool,
    cached: Any,
    active: AIProvider,
    cache: Any,
    settings: Any,
) -> _Reviewed:
    """Review one item: its cached result when ``found``, else the provider's (then cached)."""
    session_id, path = item["session_id"], item["path"]
    content, language, rules = item["content"], item["language"], item.get("rules")
    called = False

    def call_provider() -> dict[str, Any]:
        nonlocal called
        called = True
        return active.analyze(content, language, rules, settings.ai_model).to_dict()

    started = time.perf_counter()
    if not found:
        cached = cache.sync.fill_missing(
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
        embed_text=content[:EMBED_CHARS] if item.get("embed") else None,
    )


def _store(
    reviewed: list[_Reviewed],
    vectors: list[tuple[_Reviewed, list[float]]],
    model: str | None,
) -> None:
    """Replace the rows of every reviewed file, and the embeddings of ``vectors``, in one
    transaction (bulk deletes and inserts)."""
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
        if vectors:
            _replace_embeddings(
                db, [(done.session_id, done.path, vector) for done, vector in vectors], model
            )


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


def store_embeddings(stored: list[tuple[dict[str, Any], Any]], model: str | None) -> None:
    """Replace the embedding rows of each ``(payload, vector)`` in one transaction."""
    with session_scope() as db:
        _replace_embeddings(
            db, [(p["session_id"], p["path"], vector) for p, vector in stored], model
        )


def _replace_embeddings(db: Session, rows: list[tuple[int, str, Any]], model: str | None) -> None:
    """Replace the embedding of each ``(session_id, path, vector)``; ``model`` None: the local one."""
    delete_file_rows(db, FileEmbedding, FileEmbedding.path, [(s, p) for s, p, _ in rows])
    db.execute(
        insert(FileEmbedding),
        [
            {"session_id": s, "path": p, "model": model or "local", "vector": vector}
            for s, p, vector in rows
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
