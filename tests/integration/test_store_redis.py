"""The store contract on :class:`RedisStore`, plus pub/sub, outages and planted pickles."""

from __future__ import annotations

import pickle
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from sluice.errors import BackendUnavailable, CodecError
from sluice.store import DiskStore, RedisStore
from tests.store_contract import QUOTA_OPS, StoreContract, StoreSpec, apply_quota_ops

pytestmark = pytest.mark.integration


class _Exploit:
    """Unpickling this would create ``marker``: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store_spec(self, redis_url: str, key_prefix: str) -> StoreSpec:
        return StoreSpec("redis", redis_url, key_prefix)


@pytest.fixture
def redis_store(redis_url: str, key_prefix: str) -> Any:
    store = RedisStore(redis_url, prefix=key_prefix)
    yield store
    store.close()


def test_planted_pickle_is_refused(
    redis_store: RedisStore, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    client = redis.Redis.from_url(redis_url)
    client.set(key_prefix + "evil", pickle.dumps(_Exploit(marker)))
    client.rpush(key_prefix + "q", pickle.dumps(_Exploit(marker)))
    client.close()
    with pytest.raises(CodecError, match="0x80"):
        redis_store.get("evil")
    with pytest.raises(CodecError):
        redis_store.pop_many("q", 1)
    assert not marker.exists()


def test_pubsub_round_trip(redis_store: RedisStore) -> None:
    assert redis_store.supports_pubsub
    with redis_store.subscribe("events") as sub:
        assert redis_store.publish("events", {"n": 1, "text": "ü"}) == 1
        assert sub.get(timeout=2) == {"n": 1, "text": "ü"}
        assert sub.get(timeout=0.1) is None
        for n in range(3):
            redis_store.publish("events", n)
        assert list(islice(sub, 3)) == [0, 1, 2]
    assert redis_store.publish("events", "nobody") == 0


def test_subscription_iteration_ends_on_close(redis_store: RedisStore) -> None:
    sub = redis_store.subscribe("events")
    sub.close()
    assert list(sub) == []
    sub.close()


def test_unreachable_redis_is_backend_unavailable() -> None:
    store = RedisStore("redis://user:s3cret-pw@127.0.0.1:1/0", socket_timeout=0.5)
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1") as caught:
        store.get("k")
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(BackendUnavailable):
        store.incr("k")
    with pytest.raises(BackendUnavailable):
        store.lock("L").acquire(blocking=False)
    assert not store.ping()
    store.close()


def test_wrong_type_is_invalid_input(redis_store: RedisStore) -> None:
    redis_store.push("q", 1)
    with pytest.raises(ValueError, match="different kind"):
        redis_store.get("q")


def test_clear_namespace_escapes_glob_characters(redis_url: str, key_prefix: str) -> None:
    glob = RedisStore(redis_url, prefix=key_prefix + "[a]*")
    literal_sibling = RedisStore(redis_url, prefix=key_prefix + "a-")
    glob.set("k", 1)
    literal_sibling.set("k", 2)
    assert glob.clear_namespace() == 1
    assert literal_sibling.get("k") == 2
    glob.close()
    literal_sibling.close()


def test_value_paths_survive_a_killed_connection(redis_url: str, redis_store: RedisStore) -> None:
    """get_encoded/set_encoded use a per-thread connection: a killed one reconnects (retried)."""
    data = redis_store.codec.encode({"a": 1})
    redis_store.set_encoded("k", data, ttl=60)
    admin = redis.Redis.from_url(redis_url)
    try:
        for _ in range(2):
            admin.client_kill_filter(_type="normal", skipme=True)
            assert redis_store.get_encoded("k") == data
            redis_store.set_encoded("k2", data, ttl=60)
            assert redis_store.get("k2") == {"a": 1}
    finally:
        admin.close()


def test_value_paths_of_an_unreachable_redis_are_backend_unavailable() -> None:
    store = RedisStore("redis://user:s3cret-pw@127.0.0.1:1/0", socket_timeout=0.5)
    for call in (lambda: store.get_encoded("k"), lambda: store.set_encoded("k", b"\x02\x01")):
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1") as caught:
            call()
        assert "s3cret-pw" not in str(caught.value)
    store.close()


def test_an_error_reply_leaves_the_connection_in_sync(redis_store: RedisStore) -> None:
    redis_store.push("q", 1)
    data = redis_store.codec.encode("v")
    redis_store.set_encoded("v", data)
    for _ in range(3):
        with pytest.raises(ValueError, match="different kind"):
            redis_store.get_encoded("q")  # WRONGTYPE, on the thread's connection
        assert redis_store.get_encoded("v") == data  # the error's reply was consumed


def test_value_paths_from_many_threads_never_cross(redis_store: RedisStore) -> None:
    import threading

    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(50):
            data = redis_store.codec.encode([n, i])
            redis_store.set_encoded(f"t{n}", data, ttl=60)
            got = redis_store.get_encoded(f"t{n}")
            if got != data:
                errors.append(f"thread {n} read {got!r}, wrote {data!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_value_paths_after_fork_use_the_childs_own_connection(redis_store: RedisStore) -> None:
    import multiprocessing

    data = redis_store.codec.encode("parent")
    redis_store.set_encoded("f", data, ttl=60)
    assert redis_store.get_encoded("f") == data  # the parent's thread connection now exists
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_rewrites, args=(redis_store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert redis_store.get("f") == "child"  # and the parent's connection still works


def _child_rewrites(store: RedisStore) -> None:
    assert store.get("f") == "parent"
    store.set_encoded("f", store.codec.encode("child"), ttl=60)
    assert store.codec.decode(store.get_encoded("f") or b"") == "child"


def test_close_disconnects_the_thread_connections(redis_url: str, key_prefix: str) -> None:
    store = RedisStore(redis_url, prefix=key_prefix)
    store.set_encoded("c", store.codec.encode(1), ttl=60)
    conns = list(store._dedicated)
    assert conns and all(c._sock is not None for c in conns)
    store.close()
    assert all(c._sock is None for c in conns)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=QUOTA_OPS)
def test_the_lua_ledger_matches_the_python_one(
    redis_store: RedisStore, tmp_path: Path, ops: list[Any]
) -> None:
    """The Redis script and ``sluice.store.quota.Ledger`` (the disk store's) are twins."""
    key = f"twin-{time.monotonic_ns()}"
    with DiskStore(tmp_path / "disk", prefix="twin:") as disk:
        assert apply_quota_ops(redis_store, key, ops) == apply_quota_ops(disk, key, ops)
