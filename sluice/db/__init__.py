"""Database models, engine factory and migrations.

The migration functions load on first use (PEP 562): they pull in Alembic, which a worker never
needs and which costs a tenth of a second of every worker's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.db.engine import build_engine, get_engine, session_scope
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
from sluice.lazy import lazy_exports

if TYPE_CHECKING:
    from sluice.db.migrate import current_revision, downgrade, upgrade

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

__getattr__ = lazy_exports(
    __name__, {"current_revision": "migrate", "upgrade": "migrate", "downgrade": "migrate"}
)
