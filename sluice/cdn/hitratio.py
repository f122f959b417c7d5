"""``cdn_cache_hit_ratio`` from edge logs: CloudFront standard logs and sluice's nginx format.

CloudFront logs are tab-separated with a ``#Fields:`` header naming the columns; the cache outcome
is ``x-edge-result-type`` (``Hit`` and ``RefreshHit`` are hits, ``Miss`` a miss; errors and
redirects say nothing about caching and are not counted). nginx lines carry
``cache=$upstream_cache_status`` (see :mod:`sluice.cdn.nginx`); ``-`` means no cache was involved.

Counts accumulate in the shared store, so the ratio is cluster-wide and every log line is counted
once: growing files are read from the offset reached last time (restarting when the inode changes
or the file shrinks, i.e. after rotation), gzipped files are complete when delivered and are read
once.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.store import Store

STATS_KEY = "cdn:edge:counts"
RATIO_KEY = "cdn:edge:hit-ratio"
_OFFSET = "cdn:edge:offset:"
CLOUDFRONT_HITS = {"Hit", "RefreshHit"}
CLOUDFRONT_MISSES = {"Miss"}
NGINX_HITS = {"HIT", "STALE", "UPDATING", "REVALIDATED"}
NGINX_MISSES = {"MISS", "EXPIRED", "BYPASS"}
_NGINX_CACHE = re.compile(rb"\bcache=(\S*)")


@dataclass(frozen=True)
class EdgeStats:
    """Hits and misses seen at the edge; ``ratio`` is None until something was counted."""

    hits: int
    misses: int

    @property
    def ratio(self) -> float | None:
        """``hits / (hits + misses)``."""
        total = self.hits + self.misses
        return self.hits / total if total else None


class _Counter:
    """Classifies log lines of either format, remembering the CloudFront column once seen."""

    def __init__(self, result_column: int = -1) -> None:
        self.result_column = result_column
        self.hits = 0
        self.misses = 0

    def feed(self, line: bytes) -> None:
        if line.startswith(b"#Fields:"):
            fields = line[len(b"#Fields:") :].split()
            if b"x-edge-result-type" in fields:
                self.result_column = fields.index(b"x-edge-result-type")
            return
        if line.startswith(b"#"):
            return
        if self.result_column >= 0:
            columns = line.rstrip(b"\r\n").split(b"\t")
            if len(columns) > self.result_column:
                self._count(
                    columns[self.result_column].decode("ascii", "replace"),
                    CLOUDFRONT_HITS,
                    CLOUDFRONT_MISSES,
                )
            return
        match = _NGINX_CACHE.search(line)
        if match:
            self._count(match.group(1).decode("ascii", "replace"), NGINX_HITS, NGINX_MISSES)

    def _count(self, outcome: str, hits: set[str], misses: set[str]) -> None:
        if outcome in hits:
            self.hits += 1
        elif outcome in misses:
            self.misses += 1


def count_lines(lines: Iterable[bytes]) -> EdgeStats:
    """Hits and misses in log lines of either format (no state, for one-off analysis)."""
    counter = _Counter()
    for line in lines:
        counter.feed(line)
    return EdgeStats(counter.hits, counter.misses)


class EdgeLogScanner:
    """Reads new edge log lines and adds their counts to the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def scan(self, patterns: Iterable[str]) -> EdgeStats:
        """Count new lines in every file matching the glob ``patterns``; return the cluster totals."""
        # One scanner at a time: two reading from the same offset would count lines twice.
        with self.store.lock("cdn:edge-scan", lease=300, timeout=300):
            for pattern in patterns:
                for name in sorted(glob.glob(pattern)):
                    self._scan_file(name)
        stats = self.totals()
        self.store.set(
            RATIO_KEY,
            {
                "hits": stats.hits,
                "misses": stats.misses,
                "ratio": stats.ratio,
                "updated": time.time(),
            },
        )
        return stats

    def totals(self) -> EdgeStats:
        """The counts accumulated so far."""
        counts = self.store.hgetall_counters(STATS_KEY)
        return EdgeStats(counts.get("hits", 0), counts.get("misses", 0))

    def _scan_file(self, name: str) -> None:
        key = _OFFSET + hashlib.sha256(os.path.abspath(name).encode()).hexdigest()[:32]
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            return  # rotated away between the glob and now; its successor is read next time
        inode, offset, column = self.store.get(key) or (stat.st_ino, 0, -1)
        if inode != stat.st_ino or stat.st_size < offset:
            offset, column = 0, -1  # rotated or truncated: a new file under the old name
        if offset == stat.st_size:
            return
        counter = _Counter(column)
        with open(name, "rb") as raw:
            if name.endswith(".gz"):
                if offset:
                    return  # delivered complete and already counted
                with gzip.open(raw) as text:
                    _feed_all(counter, text)
                consumed = stat.st_size
            else:
                raw.seek(offset)
                consumed = offset + _feed_complete_lines(counter, raw)
        if counter.hits:
            self.store.hincr(STATS_KEY, "hits", counter.hits)
        if counter.misses:
            self.store.hincr(STATS_KEY, "misses", counter.misses)
        self.store.set(key, [stat.st_ino, consumed, counter.result_column])


def _feed_all(counter: _Counter, stream: Iterable[bytes]) -> None:
    for line in stream:
        counter.feed(line)


def _feed_complete_lines(counter: _Counter, stream: io.BufferedReader) -> int:
    """Feed every newline-terminated line; return the bytes consumed (a partial line waits)."""
    consumed = 0
    for line in stream:
        if not line.endswith(b"\n"):
            break
        counter.feed(line)
        consumed += len(line)
    return consumed


def read_edge_hit_ratio(store: Store) -> dict[str, float | None] | None:
    """The last computed ``{"hits", "misses", "ratio", "updated"}``, for the metrics exporter."""
    value = store.get(RATIO_KEY)
    return dict(value) if value else None
