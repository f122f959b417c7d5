"""Database models, engine factory and migrations."""

from sluice.db.engine import build_engine, get_engine, session_scope
from sluice.db.migrate import current_revision, downgrade, upgrade
from sluice.db.models import (
    AnalysisSession,
    AnalyzedFile,
    AuditLog,
    Base,
    CodeReviewResult,
    DeadLetterTask,
    FileEmbedding,
    Project,
)

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # engine and sessions
    "build_engine",
    "get_engine",
    "session_scope",
    # migrations
    "current_revision",
    "upgrade",
    "downgrade",
    # models
    "Base",
    "Project",
    "AnalysisSession",
    "AnalyzedFile",
    "CodeReviewResult",
    "FileEmbedding",
    "AuditLog",
    "DeadLetterTask",
]
