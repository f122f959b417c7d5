"""The main job: AI code review of a source tree (``sluice analyze PATH``).

Names are loaded on first use (PEP 562): ``sluice analyze`` starts its worker before Celery and the
database layer are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.lazy import lazy_exports

if TYPE_CHECKING:
    from sluice.analysis.changes import ChangeSet, changes_since
    from sluice.analysis.runner import AnalysisReport, run_analysis
    from sluice.analysis.service import analyze_source, analyze_sources
    from sluice.analysis.sessions import SessionSummary, list_sessions, load_session
    from sluice.analysis.walker import SourceFile, WalkReport, walk_tree

_HOMES = {
    "AnalysisReport": "runner",
    "ChangeSet": "changes",
    "SessionSummary": "sessions",
    "SourceFile": "walker",
    "WalkReport": "walker",
    "analyze_source": "service",
    "analyze_sources": "service",
    "changes_since": "changes",
    "list_sessions": "sessions",
    "load_session": "sessions",
    "run_analysis": "runner",
    "walk_tree": "walker",
}

__all__ = [
    "AnalysisReport",
    "ChangeSet",
    "SessionSummary",
    "SourceFile",
    "WalkReport",
    "analyze_source",
    "analyze_sources",
    "changes_since",
    "list_sessions",
    "load_session",
    "run_analysis",
    "walk_tree",
]


__getattr__ = lazy_exports(__name__, _HOMES)
