"""Past analysis sessions read back from the database (``sluice sessions list|show``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from sluice.analysis.review import Review
from sluice.analysis.runner import count_by_severity, sort_findings
from sluice.analysis.service import finding_of
from sluice.db import AnalysisSession, AnalyzedFile, CodeReviewResult, session_scope
from sluice.errors import InvalidInput


@dataclass(frozen=True)
class SessionSummary:
    """One line of ``sluice sessions list``."""

    id: int
    status: str
    root: str
    files_total: int
    files_analysed: int
    findings: int
    created_at: datetime
    finished_at: datetime | None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def list_sessions(limit: int = 20) -> list[SessionSummary]:
    """The newest ``limit`` sessions, newest first."""
    if not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
    files = (
        select(AnalyzedFile.session_id, func.count().label("n"))
        .group_by(AnalyzedFile.session_id)
        .subquery()
    )
    findings = (
        select(CodeReviewResult.session_id, func.count().label("n"))
        .group_by(CodeReviewResult.session_id)
        .subquery()
    )
    query = (
        select(AnalysisSession, files.c.n, findings.c.n)
        .outerjoin(files, files.c.session_id == AnalysisSession.id)
        .outerjoin(findings, findings.c.session_id == AnalysisSession.id)
        .order_by(AnalysisSession.id.desc())
        .limit(limit)
    )
    with session_scope() as db:
        return [
            SessionSummary(
                id=row.id,
                status=row.status,
                root=row.root_path,
                files_total=row.files_total,
                files_analysed=analysed or 0,
                findings=found or 0,
                created_at=row.created_at,
                finished_at=row.finished_at,
            )
            for row, analysed, found in db.execute(query).all()
        ]


def load_session(session_id: int) -> Review:
    """Session ``session_id`` with all its findings; :class:`InvalidInput` if there is none."""
    if not isinstance(session_id, int) or session_id < 1:
        raise InvalidInput(f"session id must be a positive integer, got {session_id!r}")
    with session_scope() as db:
        session = db.get(AnalysisSession, session_id)
        if session is None:
            raise InvalidInput(
                f"no analysis session {session_id}; `sluice sessions list` shows the stored ones"
            )
        analysed = db.scalar(select(func.count()).where(AnalyzedFile.session_id == session_id))
        rows = db.scalars(
            select(CodeReviewResult).where(CodeReviewResult.session_id == session_id)
        ).all()
        findings = sort_findings([finding_of(row) for row in rows])
        return Review(
            session_id=session.id,
            root=session.root_path,
            status=session.status,
            provider=session.provider,
            model=session.model,
            files_total=session.files_total,
            files_analysed=int(analysed or 0),
            findings=findings,
            by_severity=count_by_severity(findings),
            created_at=_iso(session.created_at),
            finished_at=_iso(session.finished_at),
        )
