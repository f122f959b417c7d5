"""SlowQueryAnalyzer: per-fingerprint timing of every statement an engine runs, with plans.

Timing comes from the engine's cursor events, so queries issued by the ORM or any other code on the
engine are measured, not only those sent through :class:`~sluice.query.QueryOptimizer`. Statistics
are per process (a store write per statement would cost more than most statements); p95 is over the
most recent ``window`` calls of each fingerprint. A statement over the threshold is explained once
per fingerprint and logged with its fingerprint, duration and plan summary (never its parameters).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event

from sluice.hooks import query_finished
from sluice.query.index_advisor import IndexAnalyzer, QuerySample
from sluice.query.normalizer import QueryNormalizer, QueryShape
from sluice.query.plans import Plan, PlanExplainer

log = logging.getLogger(__name__)

_START = "_sluice_started"
_MAX_SAMPLE_CHARS = 2000


@dataclass
class QueryStats:
    """Timing of one fingerprint; durations in milliseconds."""

    fingerprint: str
    normalized: str
    calls: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    slow_calls: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    sample_statement: str = ""
    sample_parameters: Any = None
    sample_duration_ms: float = 0.0
    plan: Plan | None = None
    shape: QueryShape | None = None

    @property
    def mean_ms(self) -> float:
        """Mean duration."""
        return self.total_ms / self.calls if self.calls else 0.0

    @property
    def p95_ms(self) -> float:
        """95th percentile over the recent window (nearest-rank)."""
        if not self.recent:
            return 0.0
        ordered = sorted(self.recent)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def as_dict(self) -> dict[str, Any]:
        """The report row of this fingerprint."""
        return {
            "fingerprint": self.fingerprint,
            "query": self.normalized[:_MAX_SAMPLE_CHARS],
            "calls": self.calls,
            "slow_calls": self.slow_calls,
            "total_ms": round(self.total_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "sample_statement": self.sample_statement[:_MAX_SAMPLE_CHARS],
            "sample_parameters": _printable(self.sample_parameters),
            "plan": self.plan.summary() if self.plan else None,
        }


class SlowQueryAnalyzer:
    """Times statements on an engine, explains the slow ones and feeds the index advisor.

    :param slow_threshold_ms: statements at least this slow are explained and logged.
    :param window: how many recent durations per fingerprint p95 is computed over.
    """

    def __init__(
        self,
        normalizer: QueryNormalizer,
        explainer: PlanExplainer,
        index_analyzer: IndexAnalyzer,
        slow_threshold_ms: float = 100.0,
        window: int = 1024,
    ) -> None:
        self.normalizer = normalizer
        self.explainer = explainer
        self.index_analyzer = index_analyzer
        self.slow_threshold_ms = slow_threshold_ms
        self.window = window
        self._stats: dict[str, QueryStats] = {}
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    # -- engine hooks ----------------------------------------------------------------------------

    def install(self, engine: Engine) -> None:
        """Time every statement ``engine`` runs (idempotent)."""
        if self._engine is not None:
            return
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        self._engine = engine

    def uninstall(self) -> None:
        """Stop timing."""
        if self._engine is None:
            return
        event.remove(self._engine, "before_cursor_execute", self._before)
        event.remove(self._engine, "after_cursor_execute", self._after)
        self._engine = None

    def _before(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:  # fmt: skip
        conn.info.setdefault(_START, []).append(time.perf_counter())

    def _after(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:  # fmt: skip
        starts = conn.info.get(_START)
        if not starts:
            return
        duration_ms = (time.perf_counter() - starts.pop()) * 1000.0
        stats = self.record(statement, parameters, duration_ms)
        query_finished(duration_ms / 1e3, stats.shape, duration_ms >= self.slow_threshold_ms)

    # -- recording -------------------------------------------------------------------------------

    def record(self, statement: str, parameters: Any, duration_ms: float) -> QueryStats:
        """Account one execution; explain and log it when it is slow."""
        shape = self.normalizer.analyze(statement)
        slow = duration_ms >= self.slow_threshold_ms
        with self._lock:
            stats = self._stats.get(shape.fingerprint)
            if stats is None:
                stats = self._stats[shape.fingerprint] = QueryStats(
                    shape.fingerprint,
                    shape.normalized,
                    recent=deque(maxlen=self.window),
                    shape=shape,
                )
            stats.calls += 1
            stats.total_ms += duration_ms
            stats.recent.append(duration_ms)
            if duration_ms >= stats.max_ms:
                stats.max_ms = duration_ms
            if slow:
                stats.slow_calls += 1
            # The sample is the slowest call seen: the one worth explaining and indexing for.
            if duration_ms >= stats.sample_duration_ms:
                stats.sample_statement, stats.sample_parameters = statement, parameters
                stats.sample_duration_ms = duration_ms
            needs_plan = slow and stats.plan is None and shape.explainable
        if needs_plan:
            stats.plan = self.explainer.explain(statement, parameters)
        if slow:
            log.warning(
                "slow query %s: %.1f ms; plan: %s",
                shape.fingerprint,
                duration_ms,
                stats.plan.summary() if stats.plan else "unavailable",
            )
        return stats

    # -- results ---------------------------------------------------------------------------------

    def stats(self) -> list[QueryStats]:
        """Every fingerprint's statistics, slowest total first."""
        with self._lock:
            return sorted(self._stats.values(), key=lambda s: -s.total_ms)

    def slow_queries(self) -> list[QueryStats]:
        """Fingerprints with at least one call over the threshold, slowest sample first."""
        return sorted((s for s in self.stats() if s.slow_calls), key=lambda s: -s.max_ms)

    def query_stats(self) -> dict[str, Any]:
        """Totals across fingerprints."""
        every = self.stats()
        return {
            "total_queries": sum(s.calls for s in every),
            "total_slow_queries": sum(s.slow_calls for s in every),
            "fingerprints": len(every),
            "slow_fingerprints": sum(1 for s in every if s.slow_calls),
            "slow_threshold_ms": self.slow_threshold_ms,
        }

    def get_index_recommendations(self) -> list[dict[str, Any]]:
        """Index recommendations for the slow queries (see :class:`IndexAnalyzer`)."""
        samples = [
            QuerySample(
                s.sample_statement, s.sample_parameters, s.shape, s.plan, s.calls, s.total_ms
            )
            for s in self.slow_queries()
            if s.shape is not None and s.shape.explainable
        ]
        return self.index_analyzer.recommend(samples)

    def reset(self) -> None:
        """Forget every statistic."""
        with self._lock:
            self._stats.clear()


def _printable(parameters: Any) -> Any:
    text = repr(parameters)
    return text if len(text) <= 500 else text[:497] + "..."
