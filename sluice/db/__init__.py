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
    User,
)

__all__ = [
    "AnalysisSession",
    "AnalyzedFile",
    "AuditLog",
    "Base",
    "CodeReviewResult",
    "DeadLetterTask",
    "FileEmbedding",
    "Project",
    "User",
    "build_engine",
    "current_revision",
    "downgrade",
    "get_engine",
    "session_scope",
    "upgrade",
]
