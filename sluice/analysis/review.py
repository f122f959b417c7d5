"""What every output format reads: one review (a finished run, or a session read back from the
database), as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice.ai.base import SEVERITIES
from sluice.errors import InvalidInput

if TYPE_CHECKING:
    from sluice.analysis.runner import AnalysisReport

#: ``--format`` values.
FORMATS = ("table", "json", "sarif")


@dataclass
class Review:
    """A session's findings (dicts with path, line, column, severity, rule, message) and facts."""

    session_id: int
    root: str
    status: str
    provider: str
    model: str
    files_total: int
    files_analysed: int
    findings: list[dict[str, Any]]
    by_severity: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    created_at: str | None = None
    finished_at: str | None = None
    since: str | None = None
    changed_lines_only: bool = False
    #: How a run that just finished went (mode, timings, cache); None for a stored session.
    run: dict[str, Any] | None = None


def review_of(report: AnalysisReport, provider: str, model: str) -> Review:
    """The review of a run that just finished."""
    return Review(
        session_id=report.session_id,
        root=report.root,
        status="failed" if report.failed else "completed",
        provider=provider,
        model=model,
        files_total=report.files_total,
        files_analysed=report.files_done,
        findings=report.findings,
        by_severity=report.by_severity,
        failed=report.failed,
        since=report.changes.revision if report.changes else None,
        changed_lines_only=report.changed_lines_only,
        run={
            "mode": report.mode,
            "duration_s": round(report.duration_s, 3),
            "files_per_second": round(report.files_per_second, 2),
            "provider_calls": report.provider_calls,
            "cache_hits": report.cache_hits,
            "cost_saved_usd": report.cost_saved_usd,
            "files_embedded": report.files_embedded,
            "files_skipped": dict(report.walk.skipped),
            "unreadable": list(report.walk.unreadable),
        },
    )


def severity_at_least(threshold: str) -> frozenset[str]:
    """The severities at or above ``threshold`` (``--fail-on``); raises :class:`InvalidInput`."""
    if threshold not in SEVERITIES:
        raise InvalidInput(f"unknown severity {threshold!r}; use one of {', '.join(SEVERITIES)}")
    return frozenset(SEVERITIES[: SEVERITIES.index(threshold) + 1])


def check_format(name: str) -> str:
    """``name`` if it is an output format; raises :class:`InvalidInput` otherwise."""
    if name not in FORMATS:
        raise InvalidInput(f"unknown format {name!r}; use one of {', '.join(FORMATS)}")
    return name
