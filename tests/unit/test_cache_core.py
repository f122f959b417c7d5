"""The AI result cache (guide section 1): keys, policy, L1, and the cache contract on the disk store.

:class:`CacheContract` holds every rule that depends on the L2 backend; this module runs it on a
:class:`~sluice.store.DiskStore`, ``tests/integration/test_cache_redis.py`` on Redis. The spec of a
cache is plain data so spawned processes (as real workers are) can build their own.
"""

from __future__ import annotations

import ast
import asyncio
import multiprocessing
import os
import pickle
import re
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.cache import (
    ANALYSIS,
    EMBEDDING,
    RESPONSE,
    AIResultCache,
    CacheConfig,
    CacheKeyGenerator,
    L1MemoryCache,
    cached_ai_call,
)
from sluice.cache.memory import MISSING
from sluice.celery import app
from sluice.errors import BackendUnavailable, ConfigurationError, InvalidInput
from sluice.store import Codec, DiskStore, RedisStore, Store, StoreLock

KEY_RE = re.compile(r"^ai:analysis:v1:[0-9a-f]{32}:[0-9a-f]{32}$")


@dataclass
class CacheSpec:
    """Enough to build the same cache (store + config) in any process."""

    kind: str
    location: str
    prefix: str
    config: dict[str, Any] = field(default_factory=dict)
    #: Redis only; production sizes it from CacheConfig.l2_timeout.
    socket_timeout: float = 2.0

    def store(self) -> Store:
        if self.kind == "redis":
            return RedisStore(self.location, prefix=self.prefix, socket_timeout=self.socket_timeout)
        return DiskStore(self.location, prefix=self.prefix, codec=Codec())

    def build(self, **config: Any) -> AIResultCache:
        cfg = CacheConfig(**{"stats_flush_interval": 0.05, **self.config, **config})
        return AIResultCache(store=self.store(), config=cfg, enabled=True)


def _poll(predicate: Any, deadline: float = 3.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- keys ---------------------------------------------------------------------------------------


def test_analysis_key_has_the_guides_form_with_128_bit_digests() -> None:
    key = CacheKeyGenerator.generate_analysis_key(
        code="def hello(): pass", language="python", rules=["security", "quality"], model="gpt-4"
    )
    assert KEY_RE.match(key), key


def test_fields_are_separated_not_concatenated() -> None:
    a = CacheKeyGenerator.analysis("ab", "c")
    b = CacheKeyGenerator.analysis("a", "bc")
    assert a.key != b.key and a.fingerprint != b.fingerprint
    assert CacheKeyGenerator.analysis("x", "py", ["a,b"]) != CacheKeyGenerator.analysis(
        "x", "py", ["a", "b"]
    )
    assert CacheKeyGenerator.embedding("a", "b:c") != CacheKeyGenerator.embedding("a:b", "c")


def test_rules_are_a_set() -> None:
    base = CacheKeyGenerator.analysis("x", "python", ["security", "quality"])
    assert CacheKeyGenerator.analysis("x", "python", ["quality", "security", "quality"]) == base
    assert CacheKeyGenerator.analysis("x", "python", ["security"]) != base
    assert CacheKeyGenerator.analysis("x", "python", None) == CacheKeyGenerator.analysis(
        "x", "python", []
    )


def test_model_and_language_change_the_key() -> None:
    base = CacheKeyGenerator.analysis("x", "python", None, "gpt-4")
    assert CacheKeyGenerator.analysis("x", "python", None, "gpt-4o") != base
    assert CacheKeyGenerator.analysis("x", "go", None, "gpt-4") != base


MESSAGES = [{"role": "user", "content": "hi"}]


def test_missing_temperature_is_not_zero() -> None:
    missing = CacheKeyGenerator.response(MESSAGES, "gpt-4o")
    assert CacheKeyGenerator.response(MESSAGES, "gpt-4o", temperature=0) != missing
    assert CacheKeyGenerator.response(MESSAGES, "gpt-4o", temperature=None) == missing
    assert CacheKeyGenerator.response(
        MESSAGES, "gpt-4o", temperature=0
    ) == CacheKeyGenerator.response(MESSAGES, "gpt-4o", temperature=0.0)


@pytest.mark.parametrize(
    "param",
    [
        {"temperature": 0.2},
        {"top_p": 0.5},
        {"max_tokens": 10},
        {"stop": ["\n"]},
        {"seed": 7},
        {"n": 1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
        {"system": "be terse"},
    ],
)
def test_every_response_parameter_changes_the_key(param: dict[str, Any]) -> None:
    assert CacheKeyGenerator.response(MESSAGES, "gpt-4o", **param) != CacheKeyGenerator.response(
        MESSAGES, "gpt-4o"
    )
    other_messages = [{"role": "system", "content": "x"}, *MESSAGES]
    assert CacheKeyGenerator.response(other_messages, "gpt-4o") != CacheKeyGenerator.response(
        MESSAGES, "gpt-4o"
    )


def test_transport_parameters_do_not_split_the_cache() -> None:
    assert CacheKeyGenerator.response(MESSAGES, "m", timeout=3) == CacheKeyGenerator.response(
        MESSAGES, "m"
    )


def test_any_unicode_and_huge_code_make_valid_keys() -> None:
    lone = CacheKeyGenerator.analysis("x = '\ud800'", "python")
    other = CacheKeyGenerator.analysis("x = '\udfff'", "python")
    assert KEY_RE.match(lone.key) and lone != other
    huge = CacheKeyGenerator.analysis("#" * (10 << 20), "python")
    assert KEY_RE.match(huge.key)
    with pytest.raises(InvalidInput):
        CacheKeyGenerator.analysis(b"bytes", "python")  # type: ignore[arg-type]


# -- policy -------------------------------------------------------------------------------------


def test_ttl_defaults_are_the_guides() -> None:
    config = CacheConfig()
    assert config.ttl_for(ANALYSIS) == 24 * 3600
    assert config.ttl_for(EMBEDDING) == 7 * 24 * 3600
    assert config.ttl_for(RESPONSE) == 3600


def test_settings_override_the_policy() -> None:
    config = CacheConfig.from_env(
        {
            "SLUICE_CACHE_TTL_ANALYSIS": "60",
            "SLUICE_CACHE_MAX_TEMPERATURE": "0.5",
            "SLUICE_CACHE_MAX_ENTRY_BYTES": "1000",
            "SLUICE_CACHE_PRICES": '{"m": [1, 2]}',
        }
    )
    assert config.ttl_for(ANALYSIS) == 60 and config.max_cacheable_temperature == 0.5
    assert config.max_entry_bytes == 1000 and config.prices["m"] == (1.0, 2.0)
    assert config.ttl_for(RESPONSE) == 3600


@pytest.mark.parametrize(
    "env",
    [
        {"SLUICE_CACHE_TTL_ANALYSIS": "soon"},
        {"SLUICE_CACHE_TTL_ANALYSIS": "-1"},
        {"SLUICE_CACHE_TTL_ANALYSIS": "0"},
        {"SLUICE_CACHE_TTL_ANALYSIS": "nan"},
        {"SLUICE_CACHE_TTL_EMBEDDING": "inf"},
        {"SLUICE_CACHE_MAX_ENTRY_BYTES": "1.5"},
        {"SLUICE_CACHE_PRICES": "[1]"},
    ],
)
def test_bad_settings_are_configuration_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(env))):
        CacheConfig.from_env(env)


def test_uncacheable_responses() -> None:
    config = CacheConfig()
    assert config.response_cacheable({"temperature": 0.3}) is None
    assert config.response_cacheable({}) is None
    assert config.response_cacheable({"temperature": 0.31})
    assert config.response_cacheable({"n": 2})
    assert config.response_cacheable({"stream": True})


def test_cost_uses_usage_and_price_table() -> None:
    config = CacheConfig()
    assert config.cost_usd("gpt-4", {"prompt_tokens": 1000, "completion_tokens": 1000}) == 0.09
    assert config.cost_usd("unknown", {"prompt_tokens": 1}) == config.price_per_call_usd
    assert config.cost_usd("gpt-4", None) == config.price_per_call_usd


# -- L1 -----------------------------------------------------------------------------------------


def test_l1_lru_by_entries() -> None:
    l1 = L1MemoryCache(max_entries=2, max_bytes=1000)
    l1.set("a", 1, 60, 1)
    l1.set("b", 2, 60, 1)
    assert l1.get("a") == 1  # a is now most recent
    l1.set("c", 3, 60, 1)
    assert l1.get("b") is MISSING and l1.get("a") == 1 and l1.get("c") == 3


def test_l1_lru_by_bytes() -> None:
    l1 = L1MemoryCache(max_entries=100, max_bytes=100)
    l1.set("a", "x", 60, 60)
    l1.set("b", "y", 60, 30)
    l1.set("c", "z", 60, 30)
    assert l1.get("a") is MISSING and l1.memory_usage_bytes == 60
    assert not l1.set("big", "w", 60, 101)


def test_l1_oversized_replacement_drops_the_old_value() -> None:
    l1 = L1MemoryCache(max_entries=10, max_bytes=100)
    l1.set("k", "old", 60, 10)
    assert not l1.set("k", "new", 60, 1000)
    assert l1.get("k") is MISSING and l1.memory_usage_bytes == 0


def test_l1_ttl_expiry() -> None:
    l1 = L1MemoryCache()
    l1.set("k", None, 0.05, 1)
    assert l1.get("k") is None  # a cached None is a hit
    assert _poll(lambda: l1.get("k") is MISSING, 2)
    assert len(l1) == 0


def test_l1_thread_safety() -> None:
    l1 = L1MemoryCache(max_entries=50, max_bytes=10_000)
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        try:
            for i in range(2000):
                l1.set(f"k{(i * n) % 200}", i, 60, 7)
                l1.get(f"k{i % 200}")
                if i % 50 == 0:
                    l1.delete(f"k{i % 200}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(l1) <= 50 and l1.memory_usage_bytes == 7 * len(l1)


# -- the guide's section 1, verbatim but for the import path ----------------------------------

GUIDE_KEYS = """\
from sluice.cache import CacheKeyGenerator

# Analysis result key
key = CacheKeyGenerator.generate_analysis_key(
    code="def hello(): pass",
    language="python",
    rules=["security", "quality"],
    model="gpt-4"
)
# Result: "ai:analysis:v1:abc12345:def67890"
"""

GUIDE_USAGE = """\
from sluice.cache import get_ai_cache, cached_ai_call

cache = get_ai_cache()

# Direct usage
result = await cache.get_analysis(code, language, rules)
if result is None:
    result = await ai_service.analyze(code, language, rules)
    await cache.set_analysis(code, language, rules, result)

# Decorator usage
@cached_ai_call(cache, "analysis", ttl=86400)
async def analyze_code(code: str, language: str) -> Dict:
    return await ai_client.analyze(code, language)
"""

GUIDE_MONITORING = """\
stats = cache.get_stats()
"""


def _run_guide(source: str, namespace: dict[str, Any]) -> None:
    compiled = compile(source, "<guide>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(compiled, namespace)
    if asyncio.iscoroutine(outcome):
        asyncio.run(outcome)


def run_guide_examples() -> dict[str, Any]:
    """Run the guide's examples; return their namespace (shared by the disk and Redis tests)."""

    calls: list[str] = []

    class Service:
        async def analyze(self, code: str, language: str, rules: Any = None) -> dict[str, Any]:
            calls.append(code)
            return {"findings": [], "usage": {"prompt_tokens": 10}}

    ns: dict[str, Any] = {
        "code": "import os\nos.system(x)\n",
        "language": "python",
        "rules": ["security", "quality"],
        "ai_service": Service(),
        "ai_client": Service(),
        "Dict": dict,  # the guide annotates with typing.Dict
    }
    _run_guide(GUIDE_KEYS, ns)
    assert KEY_RE.match(ns["key"])
    _run_guide(GUIDE_USAGE, ns)
    _run_guide(GUIDE_USAGE, ns)  # the second time the result comes from the cache
    assert calls == [ns["code"]]
    analyze_code = ns["analyze_code"]
    for _ in range(3):
        assert asyncio.run(analyze_code("x = 1", "python")) == {
            "findings": [],
            "usage": {"prompt_tokens": 10},
        }
    assert calls == [ns["code"], "x = 1"]
    _run_guide(GUIDE_MONITORING, ns)
    stats = ns["stats"]
    assert {"global", "savings_estimate", "l1", "l2"} <= stats.keys()
    assert {"hits", "misses", "hit_rate"} <= stats["global"].keys()
    assert {"ai_calls_saved", "estimated_cost_saved_usd"} <= stats["savings_estimate"].keys()
    assert {"size", "memory_usage_bytes"} <= stats["l1"].keys()
    assert {"hits", "misses"} <= stats["l2"].keys()
    assert stats["global"]["hits"] >= 3 and stats["savings_estimate"]["ai_calls_saved"] >= 3
    assert 0 < stats["global"]["hit_rate"] < 1
    return ns


def test_guide_examples_run_on_the_default_disk_store() -> None:
    from sluice.cache import reset_ai_cache

    reset_ai_cache()
    try:
        ns = run_guide_examples()
        assert isinstance(ns["cache"].store, DiskStore)
    finally:
        reset_ai_cache()


# -- CACHE_ENABLED=false ------------------------------------------------------------------------


def test_disabled_cache_never_touches_the_store() -> None:
    spy = mock.MagicMock(spec=Store)
    cache = AIResultCache(store=spy, enabled=False)
    calls = []

    @cached_ai_call(cache, "analysis")
    def plain(x: int) -> int:
        calls.append(x)
        return x

    @cached_ai_call(cache, "analysis")
    async def coro(x: int) -> int:
        calls.append(x)
        return x

    for _ in range(2):
        assert plain(1) == 1 and asyncio.run(coro(2)) == 2
        assert cache.sync.get_analysis("c", "py") is None
        assert not cache.sync.set_analysis("c", "py", None, {"r": 1})
        assert asyncio.run(cache.get_analysis("c", "py")) is None
        key = CacheKeyGenerator.analysis("c", "py")
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: 5) == 5
    assert calls == [1, 2, 1, 2]
    stats = cache.get_stats()
    assert stats["enabled"] is False and stats["global"]["hits"] == 0
    assert spy.method_calls == [] and spy.mock_calls == []


# -- processes (module level so spawned children can import them) ------------------------------


def _stampede_worker(spec: CacheSpec, processes: int, threads: int, delay: float) -> None:
    cache = spec.build()
    store = cache.store
    key = CacheKeyGenerator.analysis("stampede", "python", ["security"])

    def provider() -> dict[str, Any]:
        store.incr("provider-calls")
        time.sleep(delay)
        return {"findings": ["one"]}

    store.incr("ready")
    while store.get_counter("ready") < processes:
        time.sleep(0.002)
    barrier = threading.Barrier(threads)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(cache.sync.get_or_compute(ANALYSIS, key, provider))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert results == [{"findings": ["one"]}] * threads
    store.incr("finished")
    cache.close()


class _StoreDown:
    """A store whose every call fails until ``until`` (a restart), then sets ``over``.

    With ``until=None`` the outage lasts until :meth:`end`; ``first_answer`` names the one store
    method that may answer first once it is ending (say ``_lock_acquire``, so that a lock call
    is a fill's first answer from the store that came back).
    """

    def __init__(
        self,
        store: Store,
        until: float | None,
        over: threading.Event,
        first_answer: str | None = None,
    ) -> None:
        self._store, self._until, self._over = store, until, over
        self._first_answer = first_answer
        self._ending = False
        self.failed = 0

    def end(self) -> None:
        self._ending = True

    def _down(self, name: str) -> bool:
        if self._over.is_set():
            return False
        if self._until is not None:
            return time.monotonic() < self._until
        return not self._ending or name != (self._first_answer or name)

    def lock(self, name: str, lease: float = 30.0, timeout: float | None = None) -> StoreLock:
        lock = self._store.lock(name, lease, timeout)  # the real store's key for it
        lock.store = self  # type: ignore[assignment]
        return lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._down(name):
                self.failed += 1
                raise BackendUnavailable("store restarting (test)")
            self._over.set()
            return attribute(*args, **kwargs)

        return call


def _holder_until(cache: Any, key: Any, outage_over: threading.Event) -> threading.Thread:
    """A thread of ``cache`` holding the fill lock of ``key`` (running) until ``outage_over``,
    then storing "from first" 0.2 s later."""
    started = threading.Event()

    def slow() -> str:
        started.set()
        assert outage_over.wait(20)
        time.sleep(0.2)
        return "from first"

    leader = threading.Thread(target=cache.sync.get_or_compute, args=(ANALYSIS, key, slow))
    leader.start()
    assert started.wait(10)
    return leader


def _dying_holder(spec: CacheSpec, lease: float) -> None:
    """Take the fill lock of ``"orphan"`` and hang in the provider until SIGKILLed."""
    cache = spec.build(lock_lease=lease)
    key = CacheKeyGenerator.analysis("orphan", "python")

    def provider() -> str:
        cache.store.incr("holder-calls")
        time.sleep(60)
        return "never"

    cache.sync.get_or_compute(ANALYSIS, key, provider)


def _joining_waiter(spec: CacheSpec) -> None:
    """Wait on the fill of ``"in flight"`` past a short stampede_wait; count any own call."""
    cache = spec.build(lock_lease=0.3, stampede_wait=0.1)
    key = CacheKeyGenerator.analysis("in flight", "python")

    def provider() -> str:
        cache.store.incr("waiter-calls")
        return "second"

    cache.store.incr("waiters-ready")
    assert cache.sync.get_or_compute(ANALYSIS, key, provider) == "from first"
    cache.close()


def _invalidation_worker(spec: CacheSpec, mode: str) -> None:
    cache = spec.build()
    store = cache.store
    assert cache.sync.get_analysis("inv", "python") == {"v": 1}
    assert len(cache.l1) >= 1  # now served from this process's L1
    store.incr("child-ready")
    if _poll(lambda: cache.sync.get_analysis("inv", "python") is None, 3.0):
        store.incr("child-saw-invalidation")
    cache.close()


def _stats_worker(spec: CacheSpec, hits: int) -> None:
    cache = spec.build()
    for _ in range(hits):
        assert cache.sync.get_analysis("stats", "python") == {"shared": True}
    cache.close()


def _spawn(target: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


def _join(*processes: multiprocessing.process.BaseProcess) -> None:
    for p in processes:
        p.join(60)
        assert p.exitcode == 0, f"child failed with exit code {p.exitcode}"


# -- decorated functions ------------------------------------------------------------------------

_CURRENT: dict[str, AIResultCache] = {}
TASK_CALLS: list[str] = []


@app.task
@cached_ai_call(lambda: _CURRENT["cache"], "analysis")
def cached_review_task(code: str, language: str) -> dict[str, Any]:
    TASK_CALLS.append(code)
    return {"reviewed": code, "language": language}


class _Planted:
    """Unpickling this would create ``marker``: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class CacheContract:
    """Every rule that depends on L2; subclasses provide the ``spec`` fixture and ``plant_raw``."""

    @pytest.fixture
    def cache(self, spec: CacheSpec) -> Any:
        cache = spec.build()
        yield cache
        cache.close()
        cache.store.close()

    def plant_raw(self, spec: CacheSpec, key: str, payload: bytes) -> None:
        raise NotImplementedError

    def test_set_get_round_trip_and_l2_hit_fills_l1(self, cache: AIResultCache, spec: CacheSpec):
        assert cache.sync.get_analysis("a = 1", "python", ["security"]) is None
        assert cache.sync.set_analysis("a = 1", "python", ["security"], {"findings": [1]})
        other = spec.build()
        assert len(other.l1) == 0
        assert other.sync.get_analysis("a = 1", "Python", ["security", "security"]) == {
            "findings": [1]
        }
        assert len(other.l1) == 1
        assert other.sync.get_analysis("a = 1", "python", ["security"]) == {"findings": [1]}
        stats = other.get_stats()["by_type"]["analysis"]
        assert stats["l2_hits"] >= 1 and stats["l1_hits"] >= 1
        other.close()

    def test_many_keys_in_one_lookup_then_fills_count_each_read_once(
        self, cache: AIResultCache, spec: CacheSpec
    ) -> None:
        keys = [CacheKeyGenerator.analysis(code, "python") for code in ("a", "b", "c", "a")]
        assert cache.sync.set_analysis("b", "python", None, {"n": "b"})
        other = spec.build()  # another process: "b" is in L2 only
        looked = other.sync.found_many(ANALYSIS, keys)
        assert [found for found, _ in looked] == [False, True, False, False]
        assert looked[1][1] == {"n": "b"}
        made = [other.sync.fill_missing(ANALYSIS, keys[i], lambda i=i: {"n": i}) for i in (0, 2)]
        assert made == [{"n": 0}, {"n": 2}]
        stats = other.get_stats()["by_type"]["analysis"]
        assert (stats["l2_hits"], stats["misses"], stats["provider_calls"]) == (1, 3, 2)
        assert other.sync.found_many(ANALYSIS, keys[:3]) == [
            (True, {"n": 0}), (True, {"n": "b"}), (True, {"n": 2}),
        ]  # fmt: skip
        other.close()

    def test_async_api_and_embeddings(self, cache: AIResultCache) -> None:
        async def scenario() -> None:
            assert await cache.set_embeddings(["a", "b"], [[0.1], [0.2]], "emb") == 2
            assert await cache.get_embeddings(["a", "x", "b"], "emb") == [[0.1], None, [0.2]]
            assert await cache.get_embedding("a", "other") is None
            assert await cache.set_response(MESSAGES, {"text": "hi"}, "m", temperature=0)
            assert await cache.get_response(MESSAGES, "m", temperature=0) == {"text": "hi"}
            assert await cache.get_response(MESSAGES, "m") is None  # default temperature

        asyncio.run(scenario())

    @pytest.mark.parametrize(
        "params", [{"temperature": 0.7}, {"n": 2, "temperature": 0}, {"stream": True}]
    )
    def test_uncacheable_responses_are_never_stored(
        self, cache: AIResultCache, params: dict[str, Any]
    ) -> None:
        assert not cache.sync.set_response(MESSAGES, {"text": "x"}, "m", **params)
        assert cache.sync.get_response(MESSAGES, "m", **params) is None
        assert cache.get_stats()["by_type"]["response"]["uncacheable"] == 1
        calls = []

        @cached_ai_call(cache, "response")
        def chat(messages: list[dict[str, str]], **kw: Any) -> str:
            calls.append(1)
            return "answer"

        chat(MESSAGES, **params)
        chat(MESSAGES, **params)
        assert len(calls) == 2

    def test_too_large_is_not_cached_and_counted(self, spec: CacheSpec) -> None:
        cache = spec.build(max_entry_bytes=1000)
        assert not cache.sync.set_analysis("big", "python", None, {"x": secrets.token_hex(5000)})
        assert cache.sync.get_analysis("big", "python") is None
        assert cache.get_stats()["by_type"]["analysis"]["too_large"] == 1
        cache.close()

    def test_cached_none_and_empty_results_are_hits(self, cache: AIResultCache) -> None:
        calls = []
        for value in (None, [], {}, ""):
            key = CacheKeyGenerator.analysis(repr(value), "python")
            for _ in range(3):
                got = cache.sync.get_or_compute(ANALYSIS, key, lambda v=value: calls.append(v) or v)
                assert got == value
        assert calls == [None, [], {}, ""]
        cache.l1.clear()  # and from L2 too
        assert cache.lookup(ANALYSIS, CacheKeyGenerator.analysis("None", "python")) == (True, None)

    def test_exceptions_are_never_cached(self, cache: AIResultCache) -> None:
        key = CacheKeyGenerator.analysis("boom", "python")
        attempts = []

        def flaky() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("provider down")
            return "ok"

        with pytest.raises(RuntimeError):
            cache.sync.get_or_compute(ANALYSIS, key, flaky)
        assert cache.sync.get_or_compute(ANALYSIS, key, flaky) == "ok"
        assert cache.sync.get_or_compute(ANALYSIS, key, flaky) == "ok"
        assert len(attempts) == 2

    @pytest.mark.parametrize("value", [{1, 2}, object(), {"t": 2**80}, "\ud800"])
    def test_unencodable_value_fails_at_set_time(self, cache: AIResultCache, value: Any) -> None:
        with pytest.raises(InvalidInput, match="cannot cache"):
            cache.sync.set_analysis("c", "python", None, value)
        assert cache.sync.get_analysis("c", "python") is None

    def test_unicode_and_huge_code_round_trip(self, cache: AIResultCache) -> None:
        for code in ("x = '\ud800\udfff\ud83d'", "日本語 🚀", "#" * (10 << 20)):
            assert cache.sync.set_analysis(code, "python", None, {"ok": len(code)})
            cache.l1.clear()
            assert cache.sync.get_analysis(code, "python") == {"ok": len(code)}

    def test_fingerprint_mismatch_is_a_miss(self, cache: AIResultCache) -> None:
        key = CacheKeyGenerator.analysis("real", "python")
        full = cache.full_key(ANALYSIS, key.key)
        cache.store.set(
            full, {"fp": "f" * 64, "v": {"wrong": True}, "exp": time.time() + 60, "cost": 0}
        )
        assert cache.sync.get_analysis("real", "python") is None
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: {"right": True}) == {"right": True}

    @pytest.mark.parametrize(
        "envelope",
        [
            [1, 2, 3],
            {"v": 1},
            "just a string",
            {"fp": None, "v": 1, "exp": 1e12, "cost": 0},
            {"fp": "MATCH", "v": 1, "exp": "tomorrow", "cost": 0},
            {"fp": "MATCH", "v": 1, "exp": 1e12, "cost": "free"},
            {"fp": "MATCH", "v": 1, "exp": 1e12, "cost": float("inf")},
        ],
    )
    def test_wrong_shape_envelope_is_a_counted_miss(
        self, cache: AIResultCache, envelope: Any
    ) -> None:
        key = CacheKeyGenerator.analysis("shape", "python")
        if isinstance(envelope, dict) and envelope.get("fp") == "MATCH":
            envelope = {**envelope, "fp": key.fingerprint}
        cache.store.set(cache.full_key(ANALYSIS, key.key), envelope)
        assert cache.sync.get_analysis("shape", "python") is None
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: "fresh") == "fresh"
        assert cache.get_stats()["by_type"]["analysis"]["corrupt"] >= 1

    @pytest.mark.parametrize("kind", ["garbage", "pickle"])
    def test_corrupt_or_pickled_l2_value_is_a_counted_miss_never_executed(
        self, cache: AIResultCache, spec: CacheSpec, tmp_path: Path, kind: str
    ) -> None:
        marker = tmp_path / "pwned"
        payload = pickle.dumps(_Planted(marker)) if kind == "pickle" else b"\xff\x00garbage"
        key = CacheKeyGenerator.analysis("victim", "python")
        self.plant_raw(spec, cache.full_key(ANALYSIS, key.key), payload)
        for _ in range(5):  # never trips the breaker: a bad value is not an outage
            assert cache.sync.get_analysis("victim", "python") is None
        assert cache.sync.get_embeddings(["x"]) == [None]
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: {"safe": 1}) == {"safe": 1}
        stats = cache.get_stats()
        assert stats["by_type"]["analysis"]["corrupt"] >= 5
        assert stats["l2"]["circuit"] == "closed" and stats["l2"]["errors"] == 0
        assert not marker.exists()

    def test_stampede_across_processes_makes_one_call(self, spec: CacheSpec) -> None:
        processes = [_spawn(_stampede_worker, spec, 4, 16, 0.5) for _ in range(4)]
        _join(*processes)
        store = spec.store()
        assert store.get_counter("finished") == 4
        assert store.get_counter("provider-calls") == 1
        store.close()

    def test_lease_is_renewed_during_a_slow_computation(self, spec: CacheSpec) -> None:
        first, second = spec.build(lock_lease=0.3), spec.build(lock_lease=0.3)
        key = CacheKeyGenerator.analysis("slow", "python")
        calls: list[str] = []
        started = threading.Event()

        def slow() -> str:
            calls.append("first")
            started.set()
            time.sleep(1.5)  # five leases
            return "from first"

        leader = threading.Thread(target=first.sync.get_or_compute, args=(ANALYSIS, key, slow))
        leader.start()
        assert started.wait(10)
        got = second.sync.get_or_compute(ANALYSIS, key, lambda: calls.append("second") or "no")
        leader.join()
        assert got == "from first" and calls == ["first"]
        assert not first.store.lock("ai:fill:" + first.full_key(ANALYSIS, key.key)).held()
        first.close()
        second.close()

    @pytest.mark.parametrize("waiters", ["thread", "process"])
    def test_waiter_joins_a_live_holder_past_stampede_wait(
        self, spec: CacheSpec, waiters: str
    ) -> None:
        # A redelivered task whose first run is still in flight: it must wait for that run for
        # as long as the holder renews its lease, however short its own stampede_wait.
        first = spec.build(lock_lease=0.3)
        key = CacheKeyGenerator.analysis("in flight", "python")
        calls: list[str] = []
        started = threading.Event()

        count = 2 if waiters == "process" else 1

        def slow() -> str:
            calls.append("first")
            started.set()
            # In flight until every waiter is waiting, then three leases and ten stampede_waits.
            _poll(lambda: first.store.get_counter("waiters-ready") >= count, 60)
            time.sleep(1.0)
            return "from first"

        leader = threading.Thread(target=first.sync.get_or_compute, args=(ANALYSIS, key, slow))
        leader.start()
        assert started.wait(10)
        if waiters == "process":
            processes = [_spawn(_joining_waiter, spec) for _ in range(2)]
            _join(*processes)
            assert first.store.get_counter("waiter-calls") == 0
        else:
            second = spec.build(lock_lease=0.3, stampede_wait=0.1)
            second.store.incr("waiters-ready")
            got = second.sync.get_or_compute(ANALYSIS, key, lambda: calls.append("second") or "no")
            assert got == "from first"
            assert second.get_stats()["by_type"]["analysis"]["stampede_waits"] >= 1
            second.close()
        leader.join()
        assert calls == ["first"]
        first.close()

    def test_waiter_takes_over_when_the_holder_is_killed(self, spec: CacheSpec) -> None:
        holder = _spawn(_dying_holder, spec, 0.5)
        waiter = spec.build(lock_lease=0.5, stampede_wait=0.1)
        try:
            assert _poll(lambda: waiter.store.get_counter("holder-calls") == 1, 30)
            os.kill(holder.pid or 0, signal.SIGKILL)
            holder.join(10)
            key = CacheKeyGenerator.analysis("orphan", "python")
            calls: list[str] = []
            got = waiter.sync.get_or_compute(ANALYSIS, key, lambda: calls.append("w") or "taken")
            assert (got, calls) == ("taken", ["w"])  # one call, after the dead holder's lease
            assert waiter.sync.get_or_compute(ANALYSIS, key, lambda: "again") == "taken"
        finally:
            if holder.is_alive():
                holder.kill()
            waiter.close()

    @pytest.mark.parametrize("patience", ["outlasts the outage", "shorter than the outage"])
    @pytest.mark.parametrize("seen", ["answered before", "never answered"])
    def test_waiter_waits_through_a_store_outage_up_to_stampede_wait(
        self, spec: CacheSpec, patience: str, seen: str
    ) -> None:
        """ "never answered": a worker started just before a Redis restart, whose first fill finds
        the store down, cannot see the live holder's lock either; it must not call at once."""
        first = spec.build(lock_lease=0.3)
        wait = 10.0 if patience == "outlasts the outage" else 0.2
        second = spec.build(lock_lease=0.3, stampede_wait=wait, breaker_failures=1000)
        key = CacheKeyGenerator.analysis("outage", "python")
        if seen == "answered before":
            assert second.sync.get_analysis("answered once", "python") is None  # L2 answered
        outage_over = threading.Event()
        leader = _holder_until(first, key, outage_over)
        calls: list[str] = []
        outage = _StoreDown(second.store, time.monotonic() + 0.8, outage_over)
        with mock.patch.object(second.l2, "store", outage):  # all of L2 fails until it is over
            got = second.sync.get_or_compute(ANALYSIS, key, lambda: calls.append("2") or "own")
        outage_over.set()
        leader.join()
        if patience == "outlasts the outage":
            assert (got, calls) == ("from first", [])  # joined the live holder: no second call
        else:
            assert (got, calls) == ("own", ["2"])  # failed open after stampede_wait
        first.close()
        second.close()

    @pytest.mark.parametrize("first_answer", ["its lock call", "another thread's call"])
    def test_waiter_leaves_a_lock_lost_in_an_outage_to_its_holder(
        self, spec: CacheSpec, first_answer: str
    ) -> None:
        """The store comes back without the live holder's lock (a Redis restart without
        persistence). The waiter's first answer from it is its own lock call, or another thread's
        call (a stats flush) while it has no generations: it must leave the holder RETAKE_GRACE
        to re-take the lock rather than call the provider too."""
        first = spec.build(lock_lease=30.0)  # renews every 10 s: no re-take within this test
        second = spec.build(stampede_wait=10.0, breaker_failures=1000)
        key = CacheKeyGenerator.analysis("lost lock", "python")
        if first_answer == "its lock call":
            assert second.sync.get_analysis("answered once", "python") is None  # generations
        outage_over = threading.Event()
        leader = _holder_until(first, key, outage_over)
        full = first.full_key(ANALYSIS, key.key)
        assert full is not None
        calls: list[str] = []
        got: list[str] = []
        lock_first = "_lock_acquire" if first_answer == "its lock call" else None
        outage = _StoreDown(second.store, None, outage_over, first_answer=lock_first)
        with mock.patch.object(second.l2, "store", outage):
            waiter = threading.Thread(
                target=lambda: got.append(
                    second.sync.get_or_compute(ANALYSIS, key, lambda: calls.append("2") or "own")
                )
            )
            waiter.start()
            assert _poll(lambda: outage.failed >= 3, 10)  # the waiter is waiting out the outage
            assert first.store.delete("lock:ai:fill:" + full) == 1  # the restart lost the lock
            outage.end()
            if lock_first is None:
                second.l2.add_stats({"analysis:l2_hits": 0})  # another thread's first answer
            waiter.join(20)
        leader.join()
        assert (got, calls) == (["from first"], [])
        assert second.get_stats()["by_type"]["analysis"]["stampede_waits"] == 1  # one wait, counted
        first.close()
        second.close()

    @pytest.mark.parametrize("breaker", ["stays closed", "opened by the refusals"])
    def test_holder_retries_a_write_the_store_refused(self, spec: CacheSpec, breaker: str) -> None:
        # The refusals may open the holder's circuit for longer than it will wait for the store
        # (a Redis restart does): its retries must still reach the store, not the breaker alone.
        opened = {"breaker_failures": 1, "breaker_reset": 3600.0, "stampede_wait": 3.0}
        holder = spec.build(
            **(opened if breaker == "opened by the refusals" else {"breaker_failures": 1000})
        )
        reader = spec.build()
        key = CacheKeyGenerator.analysis("refused write", "python")
        real = holder.store.set_encoded
        refusals: list[int] = []

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if len(refusals) < 3:
                refusals.append(1)
                raise BackendUnavailable("store restarting (test)")
            return real(*args, **kwargs)

        with mock.patch.object(holder.store, "set_encoded", flaky):
            assert holder.sync.get_or_compute(ANALYSIS, key, lambda: {"v": 1}) == {"v": 1}
        assert len(refusals) == 3
        assert reader.sync.get_or_compute(ANALYSIS, key, lambda: {"v": 2}) == {"v": 1}
        assert holder.breaker.state == "closed"  # the write that got through closed it
        holder.close()
        reader.close()

    def test_fill_lock_lost_from_the_store_is_retaken_by_its_live_holder(
        self, spec: CacheSpec
    ) -> None:
        # A store restart that loses the key: the holder's renewal takes it back, so waiters
        # keep waiting for the run in flight instead of calling the provider a second time.
        store = spec.store()
        lock = store.lock("fill-lost", lease=0.3)
        assert lock.acquire(blocking=False, auto_renew=True)
        store.delete("fill-lost")
        assert _poll(lock.held, 3)
        rival = store.lock("fill-lost", lease=0.3)
        assert not rival.acquire(blocking=False)
        lock.release()
        assert rival.acquire(blocking=False)
        rival.release()
        store.close()

    @pytest.mark.parametrize("mode", ["key", "type", "all"])
    def test_invalidation_reaches_another_process(
        self, cache: AIResultCache, spec: CacheSpec, mode: str
    ) -> None:
        cache.sync.set_analysis("inv", "python", None, {"v": 1})
        cache.sync.set_embedding("kept", [1.0])
        child = _spawn(_invalidation_worker, spec, mode)
        assert _poll(lambda: cache.store.get_counter("child-ready") == 1, 30)
        if mode == "key":
            cache.invalidate(CacheKeyGenerator.generate_analysis_key("inv", "python"))
        elif mode == "type":
            cache.invalidate_type("analysis")
        else:
            cache.invalidate_all()
        _join(child)
        assert cache.store.get_counter("child-saw-invalidation") == 1
        assert cache.sync.get_analysis("inv", "python") is None
        kept = cache.sync.get_embedding("kept")
        assert kept is None if mode == "all" else kept == [1.0]

    def test_stats_are_cluster_wide(self, cache: AIResultCache, spec: CacheSpec) -> None:
        cache.sync.set_analysis("stats", "python", None, {"shared": True})
        _join(_spawn(_stats_worker, spec, 3), _spawn(_stats_worker, spec, 4))
        stats = cache.get_stats()
        assert stats["cluster_wide"] is True
        assert stats["by_type"]["analysis"]["l2_hits"] == 2  # one per child, then L1
        assert stats["global"]["hits"] == 7
        assert stats["savings_estimate"]["ai_calls_saved"] == 7
        assert stats["savings_estimate"]["estimated_cost_saved_usd"] == pytest.approx(0.14)
        fresh = spec.build()
        assert fresh.get_stats()["global"]["hits"] == 7
        fresh.close()

    def test_decorator_on_async_plain_and_celery_task(self, cache: AIResultCache) -> None:
        calls: list[Any] = []

        @cached_ai_call(cache, "analysis", ttl=60)
        async def review(code: str, language: str = "python") -> dict[str, Any]:
            calls.append(("async", code))
            return {"code": code}

        @cached_ai_call(cache, "embedding")
        def embed(text: str) -> list[float]:
            calls.append(("plain", text))
            return [float(len(text))]

        async def many() -> list[Any]:
            return await asyncio.gather(*(review("x") for _ in range(10)))

        assert asyncio.run(many()) == [{"code": "x"}] * 10
        assert asyncio.run(review("x", language="python")) == {"code": "x"}
        assert asyncio.run(review("y")) == {"code": "y"}
        assert [embed("abc") for _ in range(3)] == [[3.0]] * 3
        assert calls == [("async", "x"), ("async", "y"), ("plain", "abc")]
        assert review.__name__ == "review"

        _CURRENT["cache"] = cache
        TASK_CALLS.clear()
        assert cached_review_task.name == f"{__name__}.cached_review_task"
        assert cached_review_task.name in app.tasks
        first = cached_review_task.apply(args=("t = 1", "python")).get()
        second = cached_review_task.apply(args=("t = 1",), kwargs={"language": "python"}).get()
        third = cached_review_task("t = 1", "python")
        assert first == second == third == {"reviewed": "t = 1", "language": "python"}
        assert TASK_CALLS == ["t = 1"]

    # -- hostile values in the shared store fail open ------------------------------------------

    @pytest.mark.parametrize(
        "field",
        [
            {"cost": 1e303},
            {"cost": -1.0},
            {"cost": float("nan")},
            {"cost": 2**63 - 1},
            {"cost": True},
            {"exp": 1e303},
            {"exp": float("inf")},
            {"exp": 2**64 - 1},
            {"exp": time.time() - 1},
            {"fp": b"bytes"},
        ],
        ids=repr,
    )
    def test_an_absurd_envelope_is_a_counted_miss_never_an_error(
        self, cache: AIResultCache, field: dict[str, Any]
    ) -> None:
        key = CacheKeyGenerator.analysis("absurd", "python")
        envelope = {"fp": key.fingerprint, "v": {"planted": 1}, "exp": time.time() + 60, "cost": 0}
        cache.store.set(cache.full_key(ANALYSIS, key.key), {**envelope, **field})
        for _ in range(3):
            assert cache.lookup(ANALYSIS, key) == (False, None)
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: {"fresh": 1}) == {"fresh": 1}
        stats = cache.get_stats()  # the savings counter never overflows
        expired = "exp" in field and field["exp"] < time.time()
        assert expired or stats["by_type"]["analysis"]["corrupt"] >= 3
        assert stats["l2"]["circuit"] == "closed"

    # Each backend's subclass runs this test: a different executor on purpose.
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        st.dictionaries(
            st.sampled_from(["fp", "v", "exp", "cost", "n", "extra"]),
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats()
            | st.text(max_size=5)
            | st.sampled_from(["MATCH", "FUTURE"])
            | st.lists(st.integers(-5, 5), max_size=2),
        )
    )
    def test_any_planted_envelope_is_a_value_or_a_counted_miss(
        self, cache: AIResultCache, envelope: dict[str, Any]
    ) -> None:
        key = CacheKeyGenerator.analysis("fuzzed", "python")
        for name, value in list(envelope.items()):
            if value == "MATCH":
                envelope[name] = key.fingerprint
            elif value == "FUTURE":
                envelope[name] = time.time() + 60
        cache.l1.clear()
        full = cache.full_key(ANALYSIS, key.key)
        assert full is not None
        cache.store.set(full, envelope)
        found, value = cache.lookup(ANALYSIS, key)
        if found:  # only ever the planted value of an entry sluice could have written
            assert value == envelope["v"] and envelope["fp"] == key.fingerprint
            assert 0 <= envelope["cost"] <= 1000 and envelope["exp"] > time.time()
        assert cache.lookup(ANALYSIS, key)[0] is found  # and again from L1
        cache.get_stats()

    def test_a_malformed_generation_counter_fails_open_and_clear_repairs_it(
        self, spec: CacheSpec, caplog: pytest.LogCaptureFixture
    ) -> None:
        knew = spec.build()
        assert knew.sync.set_analysis("gen", "python", None, {"v": 1})
        knew.l1.clear()
        self.plant_raw(spec, "ai:gen:all", b"not a counter")
        fresh = spec.build()
        calls = []
        for _ in range(3):
            assert fresh.sync.get_analysis("gen", "python") is None  # a miss, never an error
            key = CacheKeyGenerator.analysis("gen", "python")
            value = fresh.sync.get_or_compute(ANALYSIS, key, lambda: calls.append(1) or {"v": 2})
            assert value == {"v": 2}
        assert fresh.sync.get_embeddings(["a"]) == [None]
        assert "generations unreadable" in caplog.text
        assert fresh.get_stats()["by_type"]  # stats still work
        # A process that knew the generations keeps serving (and invalidating by key works).
        knew.generations.refresh()
        assert knew.sync.get_analysis("gen", "python") == {"v": 1}
        fresh.invalidate_all()  # the repair: a fresh counter no process has seen
        assert fresh.sync.set_analysis("gen", "python", None, {"v": 3})
        fresh.l1.clear()
        assert fresh.sync.get_analysis("gen", "python") == {"v": 3}
        knew.generations.refresh()
        assert knew.sync.get_analysis("gen", "python") == {"v": 3}
        knew.close()
        fresh.close()

    def test_a_lost_write_is_counted_and_visible(self, spec: CacheSpec) -> None:
        cache = spec.build(breaker_failures=1, breaker_reset=60)
        assert cache.sync.get_analysis("lost", "python") is None  # generations read
        cache.breaker.record_failure()  # then L2 unusable: as in an outage
        assert not cache.sync.set_analysis("lost", "python", None, {"v": 1})
        assert cache.sync.get_analysis("lost", "python") == {"v": 1}  # this process's L1 has it
        cache.breaker.record_success()
        stats = cache.get_stats()
        assert stats["l2"]["lost_writes"] == 1
        assert stats["by_type"]["analysis"]["lost_writes"] == 1
        assert spec.build().sync.get_analysis("lost", "python") is None  # others miss it
        cache.close()

    # -- async methods never block the event loop ----------------------------------------------

    def test_async_methods_never_block_the_event_loop(
        self, cache: AIResultCache, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each store call waits for a coroutine to run: if it ran on the loop, it never would."""
        loop_ran = threading.Event()
        blocked: list[str] = []

        def waiting(name: str, real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if not loop_ran.wait(2.0):
                    blocked.append(name)
                return real(*args, **kwargs)

            return call

        store = cache.store
        for name in ("get_encoded", "get_many_encoded", "set_encoded", "_lock_acquire"):
            monkeypatch.setattr(store, name, waiting(name, getattr(store, name)))

        async def compute() -> dict[str, int]:
            return {"computed": 1}

        key = CacheKeyGenerator.analysis("async", "python")
        calls = [
            lambda: cache.set_analysis("a", "python", None, {"v": 1}),
            lambda: cache.get_analysis("a", "python"),
            lambda: cache.set_embeddings(["e"], [[1.0]]),
            lambda: cache.get_embeddings(["e", "f"]),
            lambda: cache.get_embedding("f"),
            lambda: cache.set_embedding("f", [2.0]),
            lambda: cache.set_response(MESSAGES, {"t": 1}, "m", temperature=0),
            lambda: cache.get_response(MESSAGES, "m", temperature=0),
            lambda: cache.get_or_compute(ANALYSIS, key, compute),
        ]

        async def scenario() -> None:
            for make in calls:
                loop_ran.clear()
                cache.l1.clear()

                async def tick() -> None:
                    await asyncio.sleep(0)
                    loop_ran.set()

                ticker = asyncio.create_task(tick())
                await make()
                await ticker

        asyncio.run(scenario())
        assert blocked == []
        assert cache.sync.get_or_compute(ANALYSIS, key, lambda: {"other": 1}) == {"computed": 1}


class TestCacheOnDisk(CacheContract):
    @pytest.fixture
    def spec(self, tmp_path: Path) -> CacheSpec:
        return CacheSpec("disk", str(tmp_path / "store"), "sluice-test:")

    def plant_raw(self, spec: CacheSpec, key: str, payload: bytes) -> None:
        import diskcache

        with diskcache.Cache(spec.location) as raw:
            raw.set(spec.prefix + key, payload)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 1e300}, {"prompt_tokens": float("nan")}, {"prompt_tokens": "many"}],
    ids=repr,
)
def test_absurd_provider_usage_never_makes_an_entry_unreadable(
    tmp_path: Path, usage: dict[str, Any]
) -> None:
    cache = CacheSpec("disk", str(tmp_path / "store"), "usage:").build()
    assert cache.sync.set_analysis("u", "python", None, {"v": 1}, model="gpt-4", usage=usage)
    cache.l1.clear()
    assert cache.sync.get_analysis("u", "python", model="gpt-4") == {"v": 1}
    assert cache.get_stats()["by_type"]["analysis"]["corrupt"] == 0
    cache.close()
