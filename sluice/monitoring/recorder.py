"""The write side of metrics: cluster-wide histograms and counters kept in the shared store.

A histogram is a set of bucket counters (non-cumulative: one increment per observation, into the
first bucket it fits), a count and a sum in microseconds, all buffered per process by
:class:`~sluice.store.BufferedCounters` and added to one store hash. Prometheus' own client keeps
them in process memory, which a prefork worker's children would each report separately (or not at
all, since the pool runs no HTTP server); the shared hash makes every process's observations one
series, readable from any process at scrape time.

A daemon thread per process flushes the buffers every second, so counts made by an idle worker child
(whose buffer would otherwise wait for its next event) reach the store promptly.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from sluice.store import BufferedCounters, get_store

if TYPE_CHECKING:
    from sluice.query.normalizer import QueryShape

log = logging.getLogger(__name__)

HISTOGRAMS_KEY = "metrics:histograms"
COUNTERS_KEY = "metrics:counters"

#: Upper bounds in seconds. Queries are mostly sub-millisecond to a second; tasks up to minutes.
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Enqueue-to-start waits: from an idle worker's milliseconds to a backlog's half hour.
QUEUE_WAIT_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
)  # fmt: skip
BUCKETS = {"db_query": QUERY_BUCKETS, "task": TASK_BUCKETS, "queue_wait": QUEUE_WAIT_BUCKETS}
INF = "+Inf"


@dataclass(frozen=True)
class Series:
    """One labelled series of a recorded metric, as read back from the store."""

    metric: str
    labels: tuple[tuple[str, str], ...]


def scope(metric: str, labels: Mapping[str, str]) -> str:
    """The counter scope of one series: ``metric|k=v|k=v`` with values percent-encoded.

    Encoding keeps ``:`` (the scope/event separator) and ``|`` out of label values.
    """
    return _scope(metric, tuple(sorted((k, str(v)) for k, v in labels.items())))


@functools.lru_cache(maxsize=4096)
def _scope(metric: str, labels: tuple[tuple[str, str], ...]) -> str:
    # Label sets repeat (one per queue, handler and outcome): encode each once per process.
    return "|".join([metric, *(f"{k}={quote(v, safe='')}" for k, v in labels)])


def parse_field(field: str) -> tuple[Series, str]:
    """Split a stored ``scope:event`` field into its series and event."""
    encoded, _, event = field.rpartition(":")
    metric, *pairs = encoded.split("|")
    labels = tuple((k, unquote(v)) for k, _, v in (p.partition("=") for p in pairs))
    return Series(metric, labels), event


@functools.cache
def _buffers(pid: int) -> tuple[BufferedCounters, BufferedCounters]:
    """This process's histogram and counter buffers (one pair per pid)."""
    return (
        BufferedCounters.in_hash(get_store, HISTOGRAMS_KEY),
        BufferedCounters.in_hash(get_store, COUNTERS_KEY),
    )


def histograms() -> BufferedCounters:
    """This process's buffer of histogram bucket counts."""
    return _buffers(os.getpid())[0]


def counters() -> BufferedCounters:
    """This process's buffer of plain event counters."""
    return _buffers(os.getpid())[1]


def flush() -> None:
    """Add this process's buffered observations to the shared totals now."""
    for buffer in _buffers(os.getpid()):
        buffer.flush()


def observe(histogram: str, seconds: float, labels: Mapping[str, str]) -> None:
    """Record one observation of ``seconds`` in ``histogram`` (a key of :data:`BUCKETS`)."""
    observe_series(histogram, scope(histogram, labels), seconds)


def observe_series(histogram: str, name: str, seconds: float) -> None:
    """:func:`observe` for a series whose :func:`scope` ``name`` the caller worked out (and keeps)."""
    bounds = BUCKETS[histogram]
    index = bisect.bisect_left(bounds, seconds)
    bucket = str(bounds[index]) if index < len(bounds) else INF
    histograms().add(
        (f"{name}:{bucket}", 1),
        (f"{name}:count", 1),
        (f"{name}:sum_us", max(0, round(seconds * 1e6))),
    )


def count(event: str, labels: Mapping[str, str], amount: int = 1) -> None:
    """Add ``amount`` to the cluster-wide counter ``event`` with ``labels``."""
    counters().incr(scope(event, labels), "n", amount)


def observe_query(seconds: float, shape: QueryShape | None, slow: bool) -> None:
    """One database statement, from the query analyzer's engine hook.

    Labelled by statement type and one table (the alphabetically first it touches, ``-`` for
    none), which keeps the label set bounded by the schema.
    """
    tables = (shape.tables_read | shape.tables_written) if shape else frozenset()
    labels = {
        "operation": shape.statement_type if shape else "other",
        "table": min(tables) if tables else "-",
    }
    try:
        observe("db_query", seconds, labels)
        if slow:
            count("slow_query", labels)
    except Exception:  # metrics must never fail the query they measure
        log.debug("could not record query metrics", exc_info=True)


@contextmanager
def observe_task(queue: str, handler: str) -> Iterator[None]:
    """Time the block as one execution of ``handler`` on ``queue``, labelled with its outcome."""
    started = time.perf_counter()
    outcome = "failure"
    try:
        yield
        outcome = "success"
    finally:
        try:
            observe(
                "task",
                time.perf_counter() - started,
                {"queue": queue, "handler": handler, "outcome": outcome},
            )
        except Exception:
            log.debug("could not record task metrics", exc_info=True)
