"""Query optimization benchmarks on PostgreSQL (guide section 3), measured in one run.

1. Dashboard queries (sluice/db/dashboard.py) at N code_review_results: p50/p95 before and after
   migration 004, and the speed-up.
2. A query-cache hit vs executing the query, and vs an in-process L1 lookup (the AI cache's L1
   when ``sluice.cache`` provides one, else an LRU dict doing the same work).
3. Overhead of the optimizer's engine hooks on uncached queries.

    python -m benchmarks.bench_query --quick      # 20k results, seconds
    python -m benchmarks.bench_query              # 1M results (seeding takes a minute or two)

Environment: SLUICE_BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
SLUICE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/15; DiskStore when unreachable).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from sluice.db import build_engine, dashboard, upgrade
from sluice.db.seed import seed
from sluice.errors import BackendUnavailable
from sluice.query import QueryOptimizer
from sluice.store import DiskStore, RedisStore, Store

DATABASE_URL = os.environ.get(
    "SLUICE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SLUICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def timings(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Milliseconds per call over ``repeat`` calls, after two warm-up calls."""
    fn()
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def dashboard_latencies(engine: Engine, repeat: int) -> dict[str, tuple[float, float]]:
    with engine.connect() as conn:
        params = dashboard.sample_params(conn)
        result = {}
        for name, query in dashboard.QUERIES.items():
            sql = text(query.sql_for(engine.dialect.name))
            values = timings(
                lambda sql=sql, p=params[name]: conn.execute(sql, p).fetchall(), repeat
            )
            result[name] = (pct(values, 0.5), pct(values, 0.95))
    return result


def open_store() -> Store:
    try:
        store: Store = RedisStore(REDIS_URL, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
        if store.ping():
            return store
    except BackendUnavailable:
        pass
    return DiskStore(Path(tempfile.mkdtemp()) / "store", prefix="bench:")


def l1_anchor() -> tuple[str, Callable[[], Any]]:
    try:
        from sluice.cache.memory import L1MemoryCache

        cache = L1MemoryCache()
        cache.set("k", [{"id": 1, "name": "x"}] * 20, ttl=300, size=400)
        return "sluice L1MemoryCache.get", lambda: cache.get("k")
    except (ImportError, TypeError):  # sluice.cache is built in parallel; its API may differ
        lru: OrderedDict[str, Any] = OrderedDict(k=[{"id": 1, "name": "x"}] * 20)

        def get() -> Any:
            lru.move_to_end("k")
            return [dict(row) for row in lru["k"]]

        return "in-process LRU dict (stand-in: sluice.cache not present)", get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k results, fewer repetitions")
    parser.add_argument("--results", type=int, help="code_review_results to seed")
    args = parser.parse_args()
    results = args.results or (20_000 if args.quick else 1_000_000)
    repeat = 30 if args.quick else 100

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(DATABASE_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    url = f"{DATABASE_URL}?options=-csearch_path%3D{schema},public"
    engine = build_engine(url)
    store = open_store()
    try:
        upgrade("001", engine=engine)
        started = time.perf_counter()
        seed(engine, results)
        print(f"seeded {results:,} code_review_results in {time.perf_counter() - started:.1f} s")

        before = dashboard_latencies(engine, repeat)
        started = time.perf_counter()
        upgrade("head", engine=engine)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        print(
            f"migration 004 (CREATE INDEX CONCURRENTLY) took {time.perf_counter() - started:.1f} s"
        )
        after = dashboard_latencies(engine, repeat)
        print(f"\n1. dashboard queries at {results:,} results (ms, {repeat} runs each)")
        columns = ("p50 before", "p95 before", "p50 after", "p95 after", "p50 x")
        print(f"{'query':26} " + " ".join(f"{c:>11}" for c in columns))
        for name in dashboard.QUERIES:
            (b50, b95), (a50, a95) = before[name], after[name]
            print(f"{name:26} {b50:11.3f} {b95:11.3f} {a50:11.3f} {a95:11.3f} {b50 / a50:11.1f}")

        optimizer = QueryOptimizer(engine, store=store, cache_enabled=True)
        with engine.connect() as conn:
            params = dashboard.sample_params(conn)
        anchor_name, anchor = l1_anchor()
        anchor_ms = statistics.median(timings(anchor, repeat * 10))
        print(f"\n2. cache hit vs execution ({type(store).__name__}); L1 anchor: {anchor_name} "
              f"{anchor_ms * 1000:.1f} us")  # fmt: skip
        print(f"{'query':26} {'execute ms':>10} {'hit ms':>8} {'exec/hit':>9} {'hit/L1':>7}")
        for name, query in dashboard.QUERIES.items():
            sql = query.sql_for("postgresql")
            executed = statistics.median(timings(
                lambda s=sql, p=params[name]: optimizer.execute_query_sync(s, p, use_cache=False), repeat
            ))  # fmt: skip
            hit = statistics.median(timings(
                lambda s=sql, p=params[name]: optimizer.execute_query_sync(s, p), repeat
            ))  # fmt: skip
            print(
                f"{name:26} {executed:10.3f} {hit:8.3f} {executed / hit:9.1f} {hit / anchor_ms:7.1f}"
            )
        optimizer.close()

        print("\n3. engine hook overhead on uncached queries (median of interleaved blocks)")
        sql = text(dashboard.QUERIES["issue_filtering"].sql)
        p = params["issue_filtering"]
        plain, hooked = [], []
        with engine.connect() as conn:
            for _ in range(10 if args.quick else 30):
                plain.append(
                    statistics.median(timings(lambda: conn.execute(sql, p).fetchall(), 50))
                )
                opt = QueryOptimizer(engine, store=store, cache_enabled=False)
                hooked.append(
                    statistics.median(timings(lambda: conn.execute(sql, p).fetchall(), 50))
                )
                opt.close()
        base, with_hooks = statistics.median(plain), statistics.median(hooked)
        print(f"plain {base:.4f} ms, hooked {with_hooks:.4f} ms, overhead "
              f"{(with_hooks - base) / base * 100:+.1f}%")  # fmt: skip
    finally:
        engine.dispose()
        if isinstance(store, RedisStore):
            store.clear_namespace()
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
