"""QueryResultCache: query results keyed by shape, parameters and table versions.

Every table has a version: a counter in one hash of the shared store, per database (the
*namespace*), plus an epoch field that invalidate-all bumps and a schema generation that DDL bumps
(processes re-read their dependency map when it moves). Tables are versioned by name without
schema, lower-case: one table however a statement names it. An entry's key is a digest of the
exact statement text (two statements differing only in a literal share a fingerprint, never an
answer), the parameters and the current version of every table the query reads, so a write
invalidates with a single increment, in every process on Redis or on one machine's DiskStore, with
no clock involved. Old entries are never read again and expire by their TTL (the backstop for
writes sluice cannot see, such as another application's).

A hit costs one store round trip (the versions hash) when the entry is also in this process's
small LRU, two otherwise. Hit/miss counters are kept locally and added to the store in batches,
so the report shows cluster-wide figures without a store write per lookup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.errors import BackendUnavailable, CodecError, InvalidInput
from sluice.query.values import UnencodableValue, decode_value, encode_value
from sluice.store import BufferedCounters, Store

log = logging.getLogger(__name__)

EPOCH = "*"  # the versions-hash field invalidate-all bumps; never a table name
GENERATION = "#schema"  # the versions-hash field DDL bumps; never a table name
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class CacheLookup:
    """The outcome of :meth:`QueryResultCache.lookup`: the key to store under, and a hit's rows."""

    key: str | None
    rows: Rows | None = None

    @property
    def hit(self) -> bool:
        """Whether ``rows`` came from the cache."""
        return self.rows is not None


class QueryResultCache:
    """Table-version-invalidated query results in a shared :class:`~sluice.store.Store`.

    :param store: the shared store (every worker process must use the same one).
    :param namespace: identifies the database; processes using one database must agree on it.
    :param default_ttl: seconds an entry lives when the caller gives no TTL.
    :param local_entries: size of the in-process LRU of entries (0 disables it).
    :param max_rows: results with more rows are not cached.
    """

    def __init__(
        self,
        store: Store,
        namespace: str,
        default_ttl: float = 300.0,
        local_entries: int = 1024,
        max_rows: int = 10_000,
        stats_flush_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.default_ttl = default_ttl
        self.max_rows = max_rows
        self._versions_key = f"query:{namespace}:versions"
        self._stats_key = f"query:{namespace}:stats"
        self._local: OrderedDict[str, tuple[float, Rows]] = OrderedDict()
        self._local_entries = local_entries
        self._counters = BufferedCounters.in_hash(store, self._stats_key, stats_flush_interval)
        self._lock = threading.Lock()

    # -- reads -----------------------------------------------------------------------------------

    def versions(self) -> dict[str, int]:
        """Every table version of this namespace (raises BackendUnavailable)."""
        return self.store.hgetall_counters(self._versions_key)

    def lookup(
        self,
        statement: str,
        tables: Iterable[str],
        params: Mapping[str, Any],
        versions: Mapping[str, int] | None = None,
    ) -> CacheLookup:
        """Find the cached rows of a query, or the key to store them under after running it.

        The versions (``versions``, or read now) must be read *before* the query runs: if a
        write commits in between, the result is stored under the old versions, where no later
        lookup will find it.
        """
        try:
            if versions is None:
                versions = self.versions()
            key = self._entry_key(statement, tables, params, versions)
        except UnencodableValue as exc:
            log.debug("query not cached: %s", exc)
            return CacheLookup(None)
        except BackendUnavailable as exc:
            log.warning("query cache unavailable, running uncached: %s", exc)
            return CacheLookup(None)
        rows = self._local_get(key)
        if rows is None:
            rows = self._store_get(key)
        self._count("hits" if rows is not None else "misses")
        return CacheLookup(key, rows)

    def store_rows(self, lookup: CacheLookup, rows: Rows, ttl: float | None = None) -> bool:
        """Cache ``rows`` under the key of a missed ``lookup``; False when they are not cacheable."""
        if lookup.key is None or len(rows) > self.max_rows:
            return False
        ttl = self.default_ttl if ttl is None else ttl
        try:
            encoded = [{k: encode_value(v) for k, v in row.items()} for row in rows]
            # The wall-clock expiry lets another process's local LRU keep the entry no longer.
            self.store.set(lookup.key, {"x": time.time() + ttl, "r": encoded}, ttl=ttl)
        except (UnencodableValue, CodecError) as exc:
            log.debug("result not cached: %s", exc)
            return False
        except BackendUnavailable as exc:
            log.warning("query cache unavailable, result not cached: %s", exc)
            return False
        self._local_put(lookup.key, rows, ttl)
        self._count("sets")
        return True

    # -- invalidation ----------------------------------------------------------------------------

    def bump(self, tables: Iterable[str]) -> None:
        """Invalidate every entry that read any of ``tables`` (one increment per table)."""
        for table in sorted({relation_key(t) for t in tables if t}):
            self.store.hincr(self._versions_key, table)

    def invalidate_table(self, table: str) -> None:
        """Invalidate every cached result that read ``table`` (a name, schema-qualified or not).

        Only that table: views over it and tables its writes cascade to are the business of
        the write tracker, which sees the statements.
        """
        if not isinstance(table, str) or not table.strip():
            raise InvalidInput(f"table name must be a non-empty string, got {table!r}")
        self.bump([table.strip()])

    def invalidate_all(self) -> None:
        """Invalidate every cached result of this namespace."""
        self.store.hincr(self._versions_key, EPOCH)
        with self._lock:
            self._local.clear()

    # -- statistics ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Cluster-wide hits, misses, hit rate and entries written (``size``, an upper bound)."""
        totals, _ = self._counters.totals()
        hits, misses = totals["cache:hits"], totals["cache:misses"]
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
            "size": totals["cache:sets"],
            "local_entries": len(self._local),
        }

    def flush_stats(self) -> None:
        """Add this process's pending counters to the store."""
        self._counters.flush()

    def reset_stats(self) -> None:
        """Forget the hit/miss counters (cluster-wide)."""
        self._counters.flush()
        self.store.delete(self._stats_key)

    # -- internals -------------------------------------------------------------------------------

    def _entry_key(
        self,
        statement: str,
        tables: Iterable[str],
        params: Mapping[str, Any],
        versions: Mapping[str, int],
    ) -> str:
        text = statement.encode("utf-8", "surrogatepass")
        material = {
            "s": hashlib.blake2b(text, digest_size=16).hexdigest(),
            "p": sorted((str(k), encode_value(v)) for k, v in params.items()),
            "v": sorted((t, versions.get(t, 0)) for t in {relation_key(t) for t in tables}),
            "e": versions.get(EPOCH, 0),
        }
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return f"query:{self.namespace}:r:{hashlib.blake2b(blob, digest_size=16).hexdigest()}"

    def _store_get(self, key: str) -> Rows | None:
        try:
            stored = self.store.get(key)
        except (CodecError, BackendUnavailable) as exc:
            log.warning("query cache read failed, running uncached: %s", exc)
            return None
        if stored is None:
            return None
        rows = [{k: decode_value(v) for k, v in row.items()} for row in stored["r"]]
        remaining = stored["x"] - time.time()
        if remaining > 0:
            self._local_put(key, rows, remaining)
        return rows

    def _local_get(self, key: str) -> Rows | None:
        with self._lock:
            entry = self._local.get(key)
            if entry is None:
                return None
            expires, rows = entry
            if expires <= time.monotonic():
                del self._local[key]
                return None
            self._local.move_to_end(key)
        # Each caller gets its own row dicts, so mutating a result cannot corrupt the cache.
        return [dict(row) for row in rows]

    def _local_put(self, key: str, rows: Rows, ttl: float) -> None:
        if not self._local_entries:
            return
        with self._lock:
            self._local[key] = (time.monotonic() + ttl, [dict(row) for row in rows])
            self._local.move_to_end(key)
            while len(self._local) > self._local_entries:
                self._local.popitem(last=False)

    def _count(self, name: str) -> None:
        self._counters.incr("cache", name)


def relation_key(name: str) -> str:
    """The version field of a table name: lower-case, without schema or quotes."""
    bare = name.strip().rsplit(".", 1)[-1].strip('"')
    return bare.lower() if bare not in (EPOCH, GENERATION) else bare
