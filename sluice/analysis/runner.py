"""``sluice analyze``: walk a tree, submit one HIGH-priority task per file, wait, summarise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery.result import AsyncResult, EagerResult
from sqlalchemy import func, select

from sluice.ai import SEVERITIES
from sluice.analysis.walker import SourceFile, WalkReport, walk_tree
from sluice.db import AnalysisSession, CodeReviewResult, session_scope, upgrade
from sluice.errors import BackendUnavailable, InvalidInput
from sluice.settings import Settings, get_settings
from sluice.workers.brokers import unreachable_broker

log = logging.getLogger(__name__)

#: Called with (files done, files total) as results arrive.
ProgressCallback = Callable[[int, int], None]
#: Characters of each file that go into its embedding.
EMBED_CHARS = 8000
#: Per file: its path and either the task's summary or the error that failed it.
Outcome = tuple[str, dict[str, Any] | str]


@dataclass
class AnalysisReport:
    """The outcome of one analysis session."""

    session_id: int
    root: str
    mode: str
    files_total: int
    files_done: int
    duration_s: float
    walk: WalkReport
    failed: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    files_embedded: int = 0
    cost_saved_usd: float = 0.0
    by_severity: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def findings_total(self) -> int:
        return sum(self.by_severity.values())

    @property
    def provider_calls(self) -> int:
        return self.files_done - self.cache_hits

    @property
    def files_per_second(self) -> float:
        return self.files_done / self.duration_s if self.duration_s > 0 else 0.0


def run_analysis(
    root: str | Path,
    *,
    rules: Sequence[str] | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> AnalysisReport:
    """Analyse every source file under ``root`` and return the session's report.

    ``workers``: how many worker processes to start for this run (``None``: an embedded worker when
    the broker is embedded, otherwise the already running ``celery -A sluice worker`` processes).
    With ``ASYNC_PROCESSING_ENABLED=false`` the files are analysed inline in this process.
    """
    settings = settings or get_settings()
    if workers is not None and workers < 0:
        raise InvalidInput(f"workers must be >= 0, got {workers}")
    started = time.perf_counter()
    walk = WalkReport()
    files = list(walk_tree(root, settings.max_file_bytes, walk))
    upgrade()
    session_id = _create_session(Path(root).resolve(), len(files), settings)
    notify = progress or (lambda done, total: None)
    notify(0, len(files))
    rule_list = list(rules) if rules else None
    if not settings.async_processing_enabled:
        mode = "inline (ASYNC_PROCESSING_ENABLED=false)"
        workers = 0
    else:
        if workers is None:
            workers = settings.worker_concurrency if settings.embedded_broker else 0
        mode = f"embedded worker x{workers}" if workers else "external workers"
    outcomes, embedded = _run_tasks(session_id, files, rule_list, workers, settings, notify)
    failed = [(path, error) for path, error in outcomes if isinstance(error, str)]
    done = [outcome for _, outcome in outcomes if isinstance(outcome, dict)]
    report = AnalysisReport(
        session_id=session_id,
        root=str(root),
        mode=mode,
        files_total=len(files),
        files_done=len(files) - len(failed),
        duration_s=time.perf_counter() - started,
        walk=walk,
        failed=failed,
        cache_hits=sum(1 for o in done if o.get("cache_hit")),
        cost_saved_usd=sum(float(o.get("cost_saved_usd", 0.0)) for o in done),
        files_embedded=embedded,
    )
    _finish_session(report)
    return report


def _create_session(root: Path, total: int, settings: Settings) -> int:
    with session_scope() as db:
        row = AnalysisSession(
            status="running",
            root_path=str(root),
            provider=settings.ai_provider,
            model=settings.ai_model,
            files_total=total,
        )
        db.add(row)
        db.flush()
        return row.id


def _run_tasks(
    session_id: int,
    files: list[SourceFile],
    rules: list[str] | None,
    workers: int,
    settings: Settings,
    notify: ProgressCallback,
) -> tuple[list[Outcome], int]:
    """One HIGH ``analysis`` task per file plus one chord of ``embedding`` chunks for all files.

    With async processing off, both run inline through the same handlers, retries and dead letters.
    """
    from sluice.celery import app
    from sluice.workers import submit_batch, submit_task
    from sluice.workers.embedded import EmbeddedWorker

    worker = None
    if workers:
        worker = EmbeddedWorker(workers, settings.data_dir / "logs" / "embedded-worker.log")
        worker.start()
    elif settings.async_processing_enabled:
        _require_external_workers(app, settings)
    try:
        results = [
            submit_task(
                "analysis",
                {
                    "session_id": session_id,
                    "path": f.path,
                    "content": f.content,
                    "language": f.language,
                    "rules": rules,
                },
            )
            for f in files
        ]
        embeddings = (
            submit_batch(
                "embedding",
                [
                    {"session_id": session_id, "path": f.path, "text": f.content[:EMBED_CHARS]}
                    for f in files
                ],
            )
            if files
            else None
        )
        outcomes = _collect(
            results, files, settings, notify, worker.check_alive if worker else None
        )
        embedded = 0
        if embeddings is not None:
            vectors = embeddings.get(timeout=settings.task_timeout)
            embedded = sum(1 for v in vectors if isinstance(v, dict))
        return outcomes, embedded
    finally:
        if worker:
            worker.stop()


def _require_external_workers(app: Any, settings: Settings) -> None:
    try:
        replies = app.control.ping(timeout=2.0)
    except Exception as exc:  # kombu raises transport-specific errors
        raise unreachable_broker(settings.broker_url, exc) from None
    if not replies:
        raise BackendUnavailable(
            "no Celery worker answered a ping; start one with `celery -A sluice worker` "
            "or pass --workers N to start workers for this run"
        )


def _collect(
    results: list[AsyncResult],
    files: list[SourceFile],
    settings: Settings,
    notify: ProgressCallback,
    check_worker: Callable[[], None] | None,
) -> list[Outcome]:
    """Wait for every result in order; fail if no result arrives for ``task_timeout`` seconds."""
    from sluice.workers.results import forget_quietly, value_of, wait_ready

    outcomes: list[Outcome] = []
    last_progress = time.monotonic()

    def still_going() -> None:
        if check_worker:
            check_worker()
        if time.monotonic() - last_progress > settings.task_timeout:
            raise BackendUnavailable(
                f"no task finished for {settings.task_timeout:.0f}s; "
                f"{len(results) - len(outcomes)} files are still queued and will be stored "
                "when workers process them"
            )

    for done, (result, source) in enumerate(zip(results, files, strict=True), 1):
        wait_ready([result], None, f"analysis of {source.path}", still_going)
        value = value_of(result)
        last_progress = time.monotonic()
        if result.failed():
            outcomes.append((source.path, f"{type(value).__name__}: {value}"))
        else:
            outcomes.append((source.path, value))
        if not isinstance(result, EagerResult):
            forget_quietly(result)
        notify(done, len(files))
    return outcomes


def _finish_session(report: AnalysisReport) -> None:
    with session_scope() as db:
        session = db.get(AnalysisSession, report.session_id)
        assert session is not None
        session.status = "failed" if report.failed else "completed"
        session.finished_at = datetime.now(UTC)
        counts = db.execute(
            select(CodeReviewResult.severity, func.count())
            .where(CodeReviewResult.session_id == report.session_id)
            .group_by(CodeReviewResult.severity)
        ).all()
        report.by_severity = {s: n for s, n in sorted(counts, key=lambda r: SEVERITIES.index(r[0]))}
        rows = db.scalars(
            select(CodeReviewResult).where(CodeReviewResult.session_id == report.session_id)
        ).all()
        report.findings = sorted(
            (
                {
                    "path": r.file_path,
                    "line": r.line,
                    "severity": r.severity,
                    "rule": r.rule,
                    "message": r.message,
                }
                for r in rows
            ),
            key=lambda f: (SEVERITIES.index(f["severity"]), f["path"], f["line"], f["rule"]),
        )
