"""The main job: AI code review of a source tree (``sluice analyze PATH``)."""

from sluice.analysis.runner import AnalysisReport, run_analysis
from sluice.analysis.service import analyze_source
from sluice.analysis.walker import SourceFile, WalkReport, walk_tree

__all__ = [
    "AnalysisReport",
    "SourceFile",
    "WalkReport",
    "analyze_source",
    "run_analysis",
    "walk_tree",
]
