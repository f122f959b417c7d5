"""AI result cache benchmark: sluice vs plain anchors, measured in the same run.

    python -m benchmarks.bench_cache [--quick] [--redis-url redis://127.0.0.1:6379/11]

Median latencies (µs) of sluice and of its anchor (cachetools.TTLCache; the raw redis-py or
diskcache client reading or writing the same bytes sluice stores) and their ratio, then the
cross-process stampede result. The L2 anchors do the same encode and decode as sluice's codec does
for this entry (msgpack, zlib-compressed at or above the codec's 1 KiB threshold, one header byte),
written with msgpack and zlib directly, so each ratio is sluice's own overhead: key generations,
the breaker, envelope checks, L1 and stats. Redis keys live under a private prefix and are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import cachetools
import diskcache
import msgpack
import redis

from benchmarks.report import Measurement, print_table
from benchmarks.services import REDIS_URL
from sluice.cache import ANALYSIS, AIResultCache, CacheConfig, CacheKeyGenerator, L1MemoryCache
from sluice.store import Codec, DiskStore, RedisStore, Store

SECTION = "AI cache"
VALUE = {"findings": [{"line": i, "rule": "security.eval", "msg": "x" * 40} for i in range(20)]}
#: The issue's goals (ratio to the anchor) and the guide's floors (µs).
L1_GOAL, L2_GOAL, HIT_FLOOR_US, SET_FLOOR_US = 2.0, 1.3, 1000.0, 5000.0


def _timed_us(fn: Callable[[], Any], n: int, blocks: int = 25) -> list[float]:
    """Mean µs per call of ``blocks`` blocks of about ``n / blocks`` calls each, after a warm-up."""
    for _ in range(min(100, n)):
        fn()
    per_block = max(1, n // blocks)
    samples = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            fn()
        samples.append((time.perf_counter() - start) / per_block * 1e6)
    return samples


def _raw_encode(value: Any) -> bytes:
    """What sluice's default codec writes, done directly: header byte, msgpack, zlib >= 1 KiB."""
    body = msgpack.packb(value, use_bin_type=True)
    if len(body) >= 1024:
        return b"\x12" + zlib.compress(body, 6)
    return b"\x02" + body


def _raw_decode(data: bytes) -> Any:
    body = zlib.decompress(data[1:]) if data[0] & 0x10 else data[1:]
    return msgpack.unpackb(body, raw=False)


def _paired_us(
    ours: Callable[[], Any], anchor: Callable[[], Any], n: int, blocks: int = 25
) -> tuple[list[float], list[float]]:
    """:func:`_timed_us` of both, their blocks interleaved so both see the same machine load."""
    for _ in range(min(100, n)):
        ours()
        anchor()
    per_block = max(1, n // blocks)
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(blocks):
        for fn, out in ((ours, samples[0]), (anchor, samples[1])):
            start = time.perf_counter()
            for _ in range(per_block):
                fn()
            out.append((time.perf_counter() - start) / per_block * 1e6)
    return samples


def _cache(store: Store) -> AIResultCache:
    return AIResultCache(store=store, config=CacheConfig(), enabled=True)


def _latency(
    metric: str,
    ours: list[float],
    anchor_name: str,
    anchor: list[float],
    *,
    goal: float | None,
    floor: float,
) -> Measurement:
    value, anchor_value = statistics.median(ours), statistics.median(anchor)
    guide = f"< {floor / 1000:g} ms (guide)"
    met = value < floor and (goal is None or value / anchor_value <= goal)
    return Measurement(
        section=SECTION,
        metric=metric,
        value=value,
        unit="µs",
        target=f"<= {goal:g}x anchor; {guide}" if goal else guide,
        anchor=anchor_name,
        anchor_value=anchor_value,
        met=met,
        samples=ours,
        anchor_samples=anchor,
    )


def bench_l1(n: int) -> list[Measurement]:
    l1 = L1MemoryCache()
    l1.set("k", VALUE, 300, 1000)
    ttl: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=10_000, ttl=300)
    ttl["k"] = VALUE
    anchor = _timed_us(lambda: ttl.get("k"), n)
    out = [
        _latency(
            "L1 hit (L1MemoryCache.get)",
            _timed_us(lambda: l1.get("k"), n),
            "cachetools.TTLCache.get",
            anchor,
            goal=L1_GOAL,
            floor=HIT_FLOOR_US,
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(DiskStore(tmp, codec=Codec()))
        cache.sync.set_analysis("code", "python", None, VALUE)
        full = _timed_us(lambda: cache.sync.get_analysis("code", "python"), n)
        out.append(
            _latency(
                "L1 hit, full API (cache.sync.get_analysis: key + fingerprint + L1)",
                full,
                "cachetools.TTLCache.get",
                anchor,
                goal=None,
                floor=HIT_FLOOR_US,
            )
        )
        cache.close()
    return out


def _l2(
    label: str,
    cache: AIResultCache,
    raw_get: Callable[[str], Any],
    raw_set: Callable[[str, Any], Any],
    n: int,
) -> list[Measurement]:
    key = CacheKeyGenerator.analysis("code", "python")
    cache.put(ANALYSIS, key, VALUE)
    full = cache.full_key(ANALYSIS, key.key)
    assert full is not None
    envelope = cache.store.get(full)
    assert cache.store.get_encoded(full) == _raw_encode(envelope)  # the same bytes
    raw_set("raw-copy", envelope)

    def sluice_hit() -> Any:
        cache.l1.clear()
        return cache.lookup(ANALYSIS, key)

    hit, raw_hit = _paired_us(sluice_hit, lambda: raw_get("raw-copy"), n)
    put, raw_put = _paired_us(
        lambda: cache.put(ANALYSIS, key, VALUE), lambda: raw_set("raw-copy", envelope), n
    )
    return [
        _latency(
            f"L2 hit ({label}, L1 cleared)",
            hit,
            f"raw {label} get+decode",
            raw_hit,
            goal=L2_GOAL,
            floor=HIT_FLOOR_US,
        ),
        _latency(
            f"set ({label})",
            put,
            f"raw {label} encode+set",
            raw_put,
            goal=L2_GOAL,
            floor=SET_FLOOR_US,
        ),
    ]


def bench_disk(n: int) -> list[Measurement]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(DiskStore(tmp + "/sluice", codec=Codec()))
        raw = diskcache.Cache(tmp + "/raw")
        try:
            return _l2(
                "disk",
                cache,
                lambda k: _raw_decode(raw.get(k)),
                lambda k, v: raw.set(k, _raw_encode(v)),
                n,
            )
        finally:
            cache.close()
            raw.close()


def bench_redis(url: str, n: int) -> list[Measurement]:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, prefix=prefix)
    if not store.ping():
        raise RuntimeError(f"Redis is not reachable at {url}")
    cache = _cache(store)
    client = redis.Redis.from_url(url)
    try:
        return _l2(
            "redis",
            cache,
            lambda k: _raw_decode(client.get(prefix + k)),
            lambda k, v: client.set(prefix + k, _raw_encode(v), ex=60),
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


def _stampede_row(kind: str, calls: int) -> Measurement:
    return Measurement(
        section=SECTION,
        metric=f"stampede: 64 concurrent misses, 4 processes ({kind})",
        value=calls,
        unit="provider calls",
        target="exactly 1",
        met=calls == 1,
    )


def run(quick: bool = False, redis_url: str = REDIS_URL) -> list[Measurement]:
    n_mem, n_io = (20_000, 300) if quick else (200_000, 3000)
    out = bench_l1(n_mem) + bench_disk(n_io) + bench_redis(redis_url, n_io)
    with tempfile.TemporaryDirectory() as tmp:
        out.append(_stampede_row("disk", bench_stampede("disk", tmp)))
    out.append(_stampede_row("redis", bench_stampede("redis", redis_url)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (seconds)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="keys under a private prefix")
    args = parser.parse_args()
    print_table(run(args.quick, args.redis_url), "AI result cache (median µs per op)")


if __name__ == "__main__":
    main()
