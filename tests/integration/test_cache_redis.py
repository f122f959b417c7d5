"""The AI result cache contract on Redis, plus fail-open against a private redis-server killed mid-run."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sluice.cache import ANALYSIS, CacheKeyGenerator, reset_ai_cache
from sluice.settings import get_settings
from sluice.store import RedisStore, reset_store_cache
from tests.cache_model import MACHINE_SETTINGS, cache_machine
from tests.conftest import REDIS_URL, require_service
from tests.unit.test_cache_core import CacheContract, CacheSpec, _poll, run_guide_examples

pytestmark = pytest.mark.integration


class TestCacheOnRedis(CacheContract):
    @pytest.fixture
    def spec(self, redis_url: str, key_prefix: str) -> CacheSpec:
        return CacheSpec("redis", redis_url, key_prefix)

    def plant_raw(self, spec: CacheSpec, key: str, payload: bytes) -> None:
        client = redis.Redis.from_url(spec.location)
        client.set(spec.prefix + key, payload)
        client.close()

    def test_foreign_value_of_another_kind_is_a_counted_miss(self, spec: CacheSpec) -> None:
        cache = spec.build()
        key = CacheKeyGenerator.analysis("listed", "python")
        client = redis.Redis.from_url(spec.location)
        client.rpush(spec.prefix + cache.full_key(ANALYSIS, key.key), b"x")
        client.close()
        for _ in range(5):
            assert cache.sync.get_analysis("listed", "python") is None
        stats = cache.get_stats()
        assert stats["l2"]["errors"] == 0 and stats["l2"]["circuit"] == "closed"
        assert stats["by_type"]["analysis"]["corrupt"] >= 5
        cache.close()


def test_guide_examples_on_redis(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_REDIS_URL", redis_url)
    monkeypatch.setenv("SLUICE_KEY_PREFIX", key_prefix)
    get_settings.cache_clear()
    reset_ai_cache()
    reset_store_cache()
    try:
        ns = run_guide_examples()
        assert ns["cache"].store.supports_pubsub
    finally:
        reset_ai_cache()
        monkeypatch.undo()
        get_settings.cache_clear()
        reset_store_cache()


# -- fail-open against a private redis-server ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` subprocess this test owns: started, killed and restarted on one port."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        assert _poll(lambda: _pings(client), 10), "private redis-server did not start"
        client.close()

    def kill(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGKILL)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        from tests.conftest import REQUIRE_SERVICES

        if REQUIRE_SERVICES:
            pytest.fail("SLUICE_REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_calls_keep_succeeding_when_redis_dies_and_recover_when_it_returns(
    private_redis: PrivateRedis, sig: int
) -> None:
    spec = CacheSpec(
        "redis",
        private_redis.url,
        "failopen:",
        # stampede_wait: a miss fails open after the store was silent this long (default 30 s,
        # the bound a fill waits through a restart for); how long is not what is tested here.
        {"l2_timeout": 0.2, "breaker_failures": 2, "breaker_reset": 0.5, "stampede_wait": 2.0},
    )
    cache = spec.build()
    calls: list[str] = []

    def provider(code: str) -> Any:
        def call() -> dict[str, str]:
            calls.append(code)
            return {"review": code}

        return call

    def review(code: str) -> Any:
        key = CacheKeyGenerator.analysis(code, "python")
        return cache.sync.get_or_compute(ANALYSIS, key, provider(code))

    for i in range(5):
        assert review(f"before {i}") == {"review": f"before {i}"}
    assert review("before 0") == {"review": "before 0"}
    assert len(calls) == 5
    assert cache.get_stats()["l2"]["circuit"] == "closed"

    private_redis.kill(sig)
    # Mid-run: hits from L1, misses through the provider, nothing raises.
    for i in range(5):
        assert review(f"before {i}") == {"review": f"before {i}"}
    for i in range(10):
        assert review(f"during {i}") == {"review": f"during {i}"}
    assert review("during 0") == {"review": "during 0"}  # L1 still works while L2 is down
    assert len(calls) == 15
    stats = cache.get_stats()
    assert stats["l2"]["errors"] >= 2
    assert stats["l2"]["circuit"] in ("open", "half-open")
    assert stats["cluster_wide"] is False
    assert cache.breaker.state == "open" or _poll(lambda: cache.breaker.state != "closed", 1)

    private_redis.start()  # same port, empty data
    # The breaker lets a trial through after breaker_reset and closes when it succeeds.
    assert _poll(lambda: review("after") is not None and cache.breaker.state == "closed", 10), (
        cache.breaker.state
    )
    assert review("after-2") == {"review": "after-2"}
    # L2 is used again: another process (a fresh cache) hits the value in Redis.
    other = spec.build()
    assert other.sync.get_analysis("after-2", "python") == {"review": "after-2"}
    assert other.get_stats()["by_type"]["analysis"]["l2_hits"] >= 1
    # Counts buffered during the outage reach the shared totals once Redis is back.
    assert _poll(lambda: cache.get_stats()["cluster_wide"], 5)
    other.close()
    cache.close()


# -- cached versus uncached, on Redis ---------------------------------------------------------------


TestCachedVersusUncachedOnRedis = cache_machine(
    lambda: RedisStore(
        require_service("redis", REDIS_URL),
        prefix=f"model-{uuid.uuid4().hex[:8]}:",
        socket_timeout=2.0,
    )
).TestCase
TestCachedVersusUncachedOnRedis.settings = MACHINE_SETTINGS
