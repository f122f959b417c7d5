"""AI result cache benchmark: sluice vs plain anchors, measured in the same run.

    python -m benchmarks.bench_cache [--quick] [--redis-url redis://127.0.0.1:6379/15]

Prints median latencies (µs) of sluice and of its anchor (cachetools.TTLCache, raw redis-py GET +
msgpack decode, raw diskcache get) and their ratio, then the cross-process stampede result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import cachetools
import diskcache
import msgpack
import redis
from rich.console import Console
from rich.table import Table

from sluice.cache import ANALYSIS, AIResultCache, CacheConfig, CacheKeyGenerator, L1MemoryCache
from sluice.store import Codec, DiskStore, RedisStore, Store

VALUE = {"findings": [{"line": i, "rule": "security.eval", "msg": "x" * 40} for i in range(20)]}


def _median_us(fn: Callable[[], Any], n: int) -> float:
    for _ in range(min(100, n)):
        fn()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def _cache(store: Store) -> AIResultCache:
    return AIResultCache(store=store, config=CacheConfig(), enabled=True)


def bench_l1(n: int) -> list[tuple[str, float, str, float]]:
    l1 = L1MemoryCache()
    l1.set("k", VALUE, 300, 1000)
    ttl: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=10_000, ttl=300)
    ttl["k"] = VALUE
    anchor = _median_us(lambda: ttl.get("k"), n)
    rows = [
        ("L1 hit: L1MemoryCache.get", _median_us(lambda: l1.get("k"), n), "TTLCache.get", anchor)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(DiskStore(tmp, codec=Codec()))
        cache.sync.set_analysis("code", "python", None, VALUE)
        full = _median_us(lambda: cache.sync.get_analysis("code", "python"), n)
        rows.append(("L1 hit: cache.sync.get_analysis", full, "TTLCache.get", anchor))
        cache.close()
    return rows


def _l2_rows(
    label: str,
    cache: AIResultCache,
    raw_get: Callable[[str], Any],
    raw_set: Callable[[str, Any], Any],
    n: int,
) -> list[tuple[str, float, str, float]]:
    key = CacheKeyGenerator.analysis("code", "python")
    cache.put(ANALYSIS, key, VALUE)
    full = cache._full_key(ANALYSIS, key.key)
    envelope = cache.store.get(full)
    raw_set("raw-copy", envelope)

    def sluice_hit() -> Any:
        cache.l1.clear()
        return cache.lookup(ANALYSIS, key)

    def anchor_hit() -> Any:
        return raw_get("raw-copy")

    rows = [
        (
            f"L2 hit ({label})",
            _median_us(sluice_hit, n),
            f"raw {label} get+decode",
            _median_us(anchor_hit, n),
        )
    ]
    rows.append(
        (
            f"set ({label})",
            _median_us(lambda: cache.put(ANALYSIS, key, VALUE), n),
            f"raw {label} encode+set",
            _median_us(lambda: raw_set("raw-copy", envelope), n),
        )
    )
    return rows


def bench_disk(n: int) -> list[tuple[str, float, str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(DiskStore(tmp + "/sluice", codec=Codec()))
        raw = diskcache.Cache(tmp + "/raw")
        rows = _l2_rows(
            "disk",
            cache,
            lambda k: msgpack.unpackb(raw.get(k)),
            lambda k, v: raw.set(k, msgpack.packb(v, use_bin_type=True)),
            n,
        )
        cache.close()
        raw.close()
        return rows


def bench_redis(url: str, n: int) -> list[tuple[str, float, str, float]]:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, prefix=prefix)
    if not store.ping():
        return []
    cache = _cache(store)
    client = redis.Redis.from_url(url)
    try:
        return _l2_rows(
            "redis",
            cache,
            lambda k: msgpack.unpackb(client.get(prefix + k)),
            lambda k, v: client.set(prefix + k, msgpack.packb(v, use_bin_type=True), ex=60),
            n,
        )
    finally:
        cache.close()
        store.clear_namespace()
        client.close()


def _stampede_child(kind: str, location: str, prefix: str, threads: int) -> None:
    import threading

    store: Store = (
        RedisStore(location, prefix=prefix)
        if kind == "redis"
        else DiskStore(location, prefix=prefix, codec=Codec())
    )
    cache = _cache(store)
    key = CacheKeyGenerator.analysis("stampede", "python")
    store.incr("ready")
    while store.get_counter("ready") < 4:
        time.sleep(0.002)

    def provider() -> Any:
        store.incr("calls")
        time.sleep(0.5)
        return VALUE

    pool = [
        threading.Thread(target=cache.sync.get_or_compute, args=(ANALYSIS, key, provider))
        for _ in range(threads)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cache.close()


def bench_stampede(kind: str, location: str) -> int:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_stampede_child, args=(kind, location, prefix, 16)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    store: Store = (
        RedisStore(location, prefix=prefix)
        if kind == "redis"
        else DiskStore(location, prefix=prefix, codec=Codec())
    )
    calls = store.get_counter("calls")
    if kind == "redis":
        store.clear_namespace()
    store.close()
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (~20 s)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    n_mem, n_io = (20_000, 300) if args.quick else (200_000, 3000)
    rows = bench_l1(n_mem) + bench_disk(n_io) + bench_redis(args.redis_url, n_io)
    table = Table(title="AI result cache (median µs per op)", title_justify="left")
    for col in ("sluice", "µs", "anchor", "µs", "ratio"):
        table.add_column(col, justify="right" if col in ("µs", "ratio") else "left")
    for name, ours, anchor_name, anchor in rows:
        table.add_row(name, f"{ours:.2f}", anchor_name, f"{anchor:.2f}", f"{ours / anchor:.2f}x")
    console = Console()
    console.print(table)
    with tempfile.TemporaryDirectory() as tmp:
        disk_calls = bench_stampede("disk", tmp)
    console.print(
        f"stampede, 64 concurrent misses across 4 processes (disk): {disk_calls} provider call(s)"
    )
    if RedisStore(args.redis_url, prefix="bench:").ping():
        redis_calls = bench_stampede("redis", args.redis_url)
        console.print(
            f"stampede, 64 concurrent misses across 4 processes (redis): {redis_calls} provider call(s)"
        )


if __name__ == "__main__":
    main()
