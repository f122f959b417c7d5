"""The behaviour every :class:`~sluice.store.Store` backend must share, written once.

A backend's test module subclasses :class:`StoreContract` and provides a ``store_spec`` fixture. The
spec is plain data so that ``multiprocessing`` children (spawned, not forked) can build their own
store from it, as separate worker processes do in production.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.errors import BackendUnavailable, CodecError, InvalidInput
from sluice.store import Codec, DiskStore, Quota, RedisStore, Store


@dataclass(frozen=True)
class StoreSpec:
    """Enough to build a store in any process: backend kind, URL or directory, prefix, format."""

    kind: str
    location: str
    prefix: str
    fmt: str = "msgpack"

    def build(self) -> Store:
        codec = Codec(self.fmt, compress_min_bytes=256)
        if self.kind == "redis":
            return RedisStore(self.location, prefix=self.prefix, codec=codec)
        return DiskStore(self.location, prefix=self.prefix, codec=codec)


SAMPLES: list[Any] = [
    None,
    True,
    0,
    -(2**62),
    3.5,
    "",
    "héllo wörld ✓ 日本語 🚀",
    [1, "two", [3.0, None]],
    {"nested": {"list": [1, 2, {"deep": "ü"}], "n": -1}, "empty": {}},
    {"big": "x" * 5000},  # compressed
]


# -- multiprocessing workers (module level so spawned children can import them) -------------------


def _start_together(store: Store, workers: int) -> None:
    """A barrier in the store itself, so the workers really overlap instead of running in turn."""
    store.incr("mp-ready")
    while store.get_counter("mp-ready") < workers:
        time.sleep(0.002)


def _incr_worker(spec: StoreSpec, workers: int, times: int) -> None:
    store = spec.build()
    _start_together(store, workers)
    for _ in range(times):
        store.incr("mp-counter")
    store.close()


def _lock_worker(spec: StoreSpec, workers: int, times: int) -> None:
    store = spec.build()
    _start_together(store, workers)
    for _ in range(times):
        with store.lock("mp-lock", lease=10, timeout=60):
            # Deliberately non-atomic: only the lock keeps concurrent updates from being lost.
            value = store.get("mp-value") or 0
            store.set("mp-value", value + 1)
    store.close()


def _pop_worker(spec: StoreSpec, workers: int, batch: int) -> list[int]:
    store = spec.build()
    _start_together(store, workers)
    popped: list[int] = []
    while items := store.pop_many("mp-queue", batch):
        popped.extend(items)
    store.close()
    return popped


def _bucket_worker(spec: StoreSpec, workers: int, attempts: int) -> int:
    store = spec.build()
    _start_together(store, workers)
    granted = sum(
        store.take_token("mp-bucket", rate=0.001, burst=50).granted for _ in range(attempts)
    )
    store.close()
    return granted


#: Random ledger operations: (op, reservation number, tokens, cost, urgent).
QUOTA_OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "reserve", "settle", "release"]),
        st.integers(0, 7),
        st.integers(0, 60),
        st.sampled_from([0.0, 0.1, 0.25]),
        st.booleans(),
    ),
    max_size=30,
)
PROPERTY_QUOTA = Quota(requests=6, tokens=150, cost_per_day=1.0, window=60)


def apply_quota_ops(
    store: Store, key: str, ops: list[tuple[str, int, int, float, bool]]
) -> list[Any]:
    """Run ``ops`` on ledger ``key``; return ``(op, outcome, state after it)`` for each."""
    outcomes: list[Any] = []
    for op, number, tokens, cost, urgent in ops:
        rid = f"r{number}"
        outcome: Any = None
        if op == "reserve":
            grant = store.reserve_quota(
                key, rid, PROPERTY_QUOTA, tokens=tokens, cost=cost, share=1.0 if urgent else 0.8
            )
            outcome = (grant.granted, grant.reason)
        elif op == "settle":
            store.settle_quota(key, rid, PROPERTY_QUOTA, tokens=tokens // 2, cost=cost / 2)
        else:
            outcome = store.release_quota(key, rid, PROPERTY_QUOTA)
        state = store.quota_state(key, PROPERTY_QUOTA)
        totals = (
            state.requests,
            state.tokens,
            round(state.cost_spent, 9),
            round(state.cost_pending, 9),
        )
        outcomes.append((op, outcome, totals))
    return outcomes


#: A ledger 4 processes race on: the day's cost cap (10 requests of 1.0) binds first.
MP_QUOTA = Quota(requests=1000, tokens=1000, cost_per_day=10.0, window=60)


def _quota_worker(spec: StoreSpec, workers: int, attempts: int) -> int:
    store = spec.build()
    _start_together(store, workers)
    granted = 0
    for n in range(attempts):
        grant = store.reserve_quota("mp-quota", f"{os.getpid()}-{n}", MP_QUOTA, tokens=7, cost=1.0)
        granted += grant.granted
    store.close()
    return granted


def _run(target: Any, spec: StoreSpec, workers: int, arg: int) -> list[Any]:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(target, [(spec, workers, arg)] * workers)


class StoreContract:
    """Tests run against every backend; subclasses supply the ``store_spec`` fixture."""

    @pytest.fixture
    def store(self, store_spec: StoreSpec) -> Any:
        store = store_spec.build()
        yield store
        store.clear_namespace()
        store.close()

    # -- plain values ---------------------------------------------------------------------------

    @pytest.mark.parametrize("value", SAMPLES, ids=repr)
    def test_set_get_round_trip(self, store: Store, value: Any) -> None:
        store.set("k", value)
        assert store.get("k") == value

    @pytest.mark.parametrize("fmt", ["msgpack", "json"])
    def test_round_trip_in_both_formats(self, store_spec: StoreSpec, fmt: str) -> None:
        store = replace(store_spec, fmt=fmt).build()
        for value in SAMPLES:
            store.set("k", value)
            assert store.get("k") == value
        store.set("t", (1, 2))
        assert store.get("t") == [1, 2]  # tuples come back as lists
        store.close()

    def test_missing_key_is_none(self, store: Store) -> None:
        assert store.get("absent") is None
        assert not store.exists("absent")
        assert store.ttl("absent") is None

    def test_overwrite_and_delete(self, store: Store) -> None:
        store.set("a", 1)
        store.set("a", 2)
        store.set("b", 3)
        assert store.get("a") == 2
        assert store.delete("a", "b", "absent") == 2
        assert store.get("a") is None
        assert store.delete() == 0

    def test_ttl_expiry(self, store: Store) -> None:
        store.set("short", "v", ttl=0.3)
        store.set("forever", "v")
        remaining = store.ttl("short")
        assert remaining is not None and 0 < remaining <= 0.3
        assert store.ttl("forever") is None
        time.sleep(0.5)
        assert store.get("short") is None
        assert not store.exists("short")
        assert store.get("forever") == "v"

    def test_add_only_when_absent(self, store: Store) -> None:
        assert store.add("k", "first")
        assert not store.add("k", "second")
        assert store.get("k") == "first"
        assert store.add("brief", 1, ttl=0.2)
        time.sleep(0.35)
        assert store.add("brief", 2)
        assert store.get("brief") == 2

    def test_get_many_set_many(self, store: Store) -> None:
        store.set_many({"a": 1, "b": [2], "c": {"x": "y"}})
        assert store.get_many(["a", "b", "c", "missing"]) == {"a": 1, "b": [2], "c": {"x": "y"}}
        assert store.get_many([]) == {}
        store.set_many({"t1": 1, "t2": 2}, ttl=0.3)
        time.sleep(0.5)
        assert store.get_many(["t1", "t2", "a"]) == {"a": 1}

    @pytest.mark.parametrize("value", SAMPLES, ids=repr)
    def test_encoded_bytes_are_the_values_bytes(self, store: Store, value: Any) -> None:
        """get_encoded/set_encoded carry exactly what set/get do: one encode serves both."""
        store.set("v", value)
        data = store.get_encoded("v")
        assert isinstance(data, bytes) and store.codec.decode(data) == value
        store.set_encoded("copy", data, ttl=60)
        assert store.get("copy") == value
        assert store.get_many_encoded(["v", "copy", "missing"]) == {"v": data, "copy": data}
        assert store.get_encoded("missing") is None
        assert store.get_many_encoded([]) == {}

    def test_set_encoded_replaces_any_kind_and_expires(self, store: Store) -> None:
        data = store.codec.encode({"a": 1})
        store.push("was-a-list", 1, 2, 3)
        store.hincr("was-a-hash", "f")
        for key in ("was-a-list", "was-a-hash"):
            store.set_encoded(key, data)
            assert store.get(key) == {"a": 1}
        store.delete("was-a-list")
        assert store.length("was-a-list") == 0  # no item of the old list survived
        store.push("was-a-list", "new")
        assert store.pop_many("was-a-list", 10) == ["new"]
        store.set_encoded("brief", data, ttl=0.2)
        time.sleep(0.35)
        assert store.get_encoded("brief") is None
        with pytest.raises(InvalidInput):
            store.set_encoded("k", "not bytes")  # type: ignore[arg-type]

    def test_set_many_encoded_stores_each_and_expires_them(self, store: Store) -> None:
        data = {key: store.codec.encode(key * 3) for key in ("a", "b", "c")}
        store.push("c", 1)  # a list under one of the keys is replaced, as set_encoded does
        store.set_many_encoded(data, ttl=0.3)
        assert store.get_many_encoded([*data, "missing"]) == data
        assert store.get("c") == "ccc"
        store.set_many_encoded({})  # nothing to store is not an error
        time.sleep(0.45)
        assert store.get_many_encoded(list(data)) == {}
        for bad in ({"a": b"x", "k": "not bytes"}, {"a": b"x", "": b"x"}):
            with pytest.raises(InvalidInput):
                store.set_many_encoded(bad)  # type: ignore[arg-type]
            assert store.get_encoded("a") is None  # all or nothing
        with pytest.raises(InvalidInput):
            store.set_many_encoded({}, ttl=-1)

    def test_touch_many_renews_the_keys_present_and_says_which(self, store: Store) -> None:
        store.set_encoded("short", store.codec.encode(1), ttl=0.3)
        store.set_encoded("forever", store.codec.encode(2))
        present = store.touch_many(["short", "forever", "absent"], ttl=30)
        assert present == {"short", "forever"}
        time.sleep(0.45)  # past the first ttl: the renewal kept it
        assert store.get("short") == 1
        assert 0 < (store.ttl("forever") or 0) <= 30  # a key that never expired now does
        assert store.touch_many([], ttl=30) == set()
        assert not store.exists("absent")  # touching an absent key does not create it
        store.set_encoded("lapsed", store.codec.encode(3), ttl=0.1)
        time.sleep(0.2)
        assert store.touch_many(["lapsed"], ttl=30) == set()  # an expired key is not revived
        assert store.get("lapsed") is None

    def test_touch_many_expires_a_list_whole(self, store: Store) -> None:
        store.push("queue", "a", "b")
        assert store.touch_many(["queue"], ttl=0.3) == {"queue"}
        assert store.length("queue") == 2
        time.sleep(0.45)
        assert store.length("queue") == 0
        store.push("queue", "new")  # no item of the old list survived its expiry
        assert store.pop_many("queue", 10) == ["new"]
        for ttl in (None, 0, -1, float("inf")):
            with pytest.raises(InvalidInput):
                store.touch_many(["short"], ttl=ttl)  # type: ignore[arg-type]

    def test_get_encoded_of_another_kind_is_refused(self, store: Store) -> None:
        """A list is refused; a counter is refused or gives bytes the codec refuses."""
        store.push("listed", 1)
        store.incr("counted")
        with pytest.raises((InvalidInput, CodecError)):
            store.get_encoded("listed")
        with pytest.raises((InvalidInput, CodecError)):
            store.codec.decode(store.get_encoded("counted") or b"")

    def test_unencodable_value_is_refused(self, store: Store) -> None:
        with pytest.raises(CodecError, match="set"):
            store.set("k", {1, 2})
        with pytest.raises(CodecError, match="object"):
            store.set("k", object())
        assert store.get("k") is None

    @pytest.mark.parametrize("key", ["", None, 5, b"bytes", "nul\x00inside"])
    def test_bad_keys_are_refused(self, store: Store, key: Any) -> None:
        with pytest.raises(InvalidInput):
            store.set(key, 1)
        with pytest.raises(InvalidInput):
            store.get(key)

    @pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "5", True])
    def test_bad_ttls_are_refused(self, store: Store, ttl: Any) -> None:
        with pytest.raises(InvalidInput):
            store.set("k", 1, ttl=ttl)
        with pytest.raises(InvalidInput):
            store.incr("c", ttl=ttl)

    def test_clear_namespace_spares_other_prefixes(self, store_spec: StoreSpec) -> None:
        # Sibling prefixes: neither is a prefix of the other.
        mine = replace(store_spec, prefix=store_spec.prefix + "mine-").build()
        other = replace(store_spec, prefix=store_spec.prefix + "other-").build()
        mine.set("a", 1)
        mine.incr("n")
        mine.push("q", 1, 2)
        other.set("a", 2)
        assert mine.clear_namespace() >= 3
        assert mine.get("a") is None and mine.length("q") == 0
        assert other.get("a") == 2
        other.clear_namespace()
        mine.close()
        other.close()

    def test_ping(self, store: Store) -> None:
        assert store.ping()

    # -- counters -------------------------------------------------------------------------------

    def test_incr_and_get_counter(self, store: Store) -> None:
        assert store.get_counter("c") == 0
        assert store.incr("c") == 1
        assert store.incr("c", 5) == 6
        assert store.incr("c", -2) == 4
        assert store.get_counter("c") == 4
        with pytest.raises(InvalidInput):
            store.incr("c", 1.5)  # type: ignore[arg-type]

    def test_incr_ttl_applies_only_on_creation(self, store: Store) -> None:
        store.incr("c", ttl=0.4)
        store.incr("c", ttl=100)
        remaining = store.ttl("c")
        assert remaining is not None and remaining <= 0.4
        time.sleep(0.6)
        assert store.get_counter("c") == 0
        assert store.incr("c") == 1
        assert store.ttl("c") is None

    def test_hash_counters(self, store: Store) -> None:
        assert store.hgetall_counters("h") == {}
        assert store.hincr("h", "ok") == 1
        assert store.hincr("h", "ok", 2) == 3
        assert store.hincr("h", "failed") == 1
        assert store.hgetall_counters("h") == {"ok": 3, "failed": 1}

    @pytest.mark.parametrize("first", [1, -1])
    def test_hash_field_that_settles_at_zero_is_dropped(self, store: Store, first: int) -> None:
        store.hincr("h", "keep", 2)
        assert store.hincr_drop_zero("h", "pair", first) == first  # either order may come first
        assert store.hgetall_counters("h") == {"keep": 2, "pair": first}
        assert store.hincr_drop_zero("h", "pair", -first) == 0
        assert store.hgetall_counters("h") == {"keep": 2}
        assert store.hincr_drop_zero("h", "keep", -2) == 0
        assert store.hgetall_counters("h") == {}

    def test_counter_is_not_a_value(self, store: Store) -> None:
        store.incr("c")
        with pytest.raises((CodecError, InvalidInput)):
            store.get("c")
        store.set("v", "text")
        with pytest.raises(InvalidInput):
            store.get_counter("v")
        with pytest.raises(InvalidInput):
            store.incr("v")
        store.push("q", 1)
        with pytest.raises(InvalidInput):
            store.hincr("q", "field")

    # -- token bucket ---------------------------------------------------------------------------

    def test_token_bucket_burst_then_refusal_then_refill(self, store: Store) -> None:
        grants = [store.take_token("b", rate=10, burst=3) for _ in range(4)]
        assert [g.granted for g in grants] == [True, True, True, False]
        assert grants[0].wait_seconds == 0
        assert 0 < grants[3].wait_seconds <= 0.1 + 1e-6
        assert grants[3].remaining < 1
        time.sleep(0.25)  # 10 tokens/s refills at least two
        assert store.take_token("b", rate=10, burst=3).granted
        assert store.take_token("b", rate=10, burst=3).granted

    def test_token_bucket_multi_token_wait(self, store: Store) -> None:
        assert store.take_token("b", rate=1, burst=5, tokens=5).granted
        refused = store.take_token("b", rate=1, burst=5, tokens=2)
        assert not refused.granted
        assert 1.5 < refused.wait_seconds <= 2.0

    @pytest.mark.parametrize(
        ("rate", "burst", "tokens"),
        [(0, 1, 1), (-1, 1, 1), (1, 1, 2), (1, 1, 0), (float("nan"), 1, 1), (1, "5", 1)],
    )
    def test_token_bucket_validation(
        self, store: Store, rate: Any, burst: Any, tokens: Any
    ) -> None:
        with pytest.raises(InvalidInput):
            store.take_token("b", rate=rate, burst=burst, tokens=tokens)

    # -- quota ledgers --------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("quota", "tokens", "cost", "admitted", "reason"),
        [
            (Quota(requests=3), 1, 0, 3, "requests"),
            (Quota(tokens=100), 30, 0, 3, "tokens"),
            (Quota(cost_per_day=1.0), 1, 0.3, 3, "cost"),
            (Quota(requests=2, tokens=100, cost_per_day=1.0), 30, 0.3, 2, "requests"),
            (Quota(requests=5, tokens=50, cost_per_day=1.0), 30, 0.3, 1, "tokens"),
        ],
    )
    def test_quota_admits_up_to_each_cap_then_refuses_with_the_reason(
        self, store: Store, quota: Quota, tokens: float, cost: float, admitted: int, reason: str
    ) -> None:
        grants = [
            store.reserve_quota("q", f"r{n}", quota, tokens=tokens, cost=cost)
            for n in range(admitted + 1)
        ]
        assert [g.granted for g in grants] == [True] * admitted + [False]
        refused = grants[-1]
        assert refused.reason == reason and refused.wait_seconds > 0
        state = store.quota_state("q", quota)
        assert state.requests == admitted  # a refusal records nothing
        assert state.tokens == pytest.approx(admitted * tokens)
        assert state.cost_pending == pytest.approx(admitted * cost) and state.cost_spent == 0

    def test_quota_settle_gives_back_the_difference_and_spends_the_cost(self, store: Store) -> None:
        quota = Quota(tokens=100, cost_per_day=1.0)
        assert store.reserve_quota("q", "a", quota, tokens=80, cost=0.8).granted
        assert not store.reserve_quota("q", "b", quota, tokens=30, cost=0.1).granted
        store.settle_quota("q", "a", quota, tokens=20, cost=0.25)
        state = store.quota_state("q", quota)
        assert (state.tokens, state.cost_pending) == (20, 0)
        assert state.cost_spent == pytest.approx(0.25)
        assert store.reserve_quota("q", "b", quota, tokens=30, cost=0.1).granted
        # A budget spent beyond reach waits for the next UTC day, not for a window.
        refused = store.reserve_quota("q", "c", quota, tokens=1, cost=0.7)
        assert refused.reason == "cost"
        assert 0 < refused.wait_seconds <= 86400

    def test_quota_release_returns_everything_once(self, store: Store) -> None:
        quota = Quota(requests=1, tokens=10)
        assert store.reserve_quota("q", "a", quota, tokens=10, cost=0).granted
        assert store.release_quota("q", "a", quota)
        assert not store.release_quota("q", "a", quota)
        assert store.quota_state("q", quota).requests == 0
        assert store.reserve_quota("q", "b", quota, tokens=10, cost=0).granted

    def test_quota_share_keeps_headroom_that_only_a_full_share_may_use(self, store: Store) -> None:
        quota = Quota(tokens=100)
        # Urgent work first: it does not eat into what restricted work may use...
        assert store.reserve_quota("q", "u1", quota, tokens=10, cost=0, share=1.0).granted
        low = [
            store.reserve_quota("q", f"l{n}", quota, tokens=20, cost=0, share=0.8) for n in range(5)
        ]
        assert [g.granted for g in low] == [True] * 4 + [False]
        assert low[-1].reason == "tokens" and low[-1].wait_seconds > 0
        # ...and the rest of the limit is still there for it, but no more.
        assert store.reserve_quota("q", "u2", quota, tokens=10, cost=0, share=1.0).granted
        assert not store.reserve_quota("q", "u3", quota, tokens=1, cost=0, share=1.0).granted
        # With room in the limit, restricted work may still grow back only to its share.
        assert store.release_quota("q", "l0", quota) and store.release_quota("q", "u2", quota)
        assert not store.reserve_quota("q", "l5", quota, tokens=21, cost=0, share=0.8).granted
        assert store.reserve_quota("q", "l5", quota, tokens=20, cost=0, share=0.8).granted
        assert store.quota_state("q", quota).tokens == 90

    def test_quota_spaces_out_the_callers_it_refuses(self, store: Store) -> None:
        quota = Quota(tokens=100, window=60)
        assert store.reserve_quota("q", "full", quota, tokens=100, cost=0).granted
        waits = [
            store.reserve_quota("q", f"w{n}", quota, tokens=10, cost=0).wait_seconds
            for n in range(4)
        ]
        # Each next waiter comes back one request's share of the window (10/100 of 60 s) later.
        assert waits[0] == pytest.approx(60, abs=0.5)
        for earlier, later in itertools.pairwise(waits):
            assert later - earlier == pytest.approx(6.0, abs=0.5)

    # Each backend's subclass runs this test: a different executor on purpose.
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(ops=QUOTA_OPS)
    def test_quota_never_grants_past_a_cap(self, store: Store, ops: list[Any]) -> None:
        # (Settling a call nobody reserved, e.g. after its lease lapsed, may: the call happened.)
        key = f"prop-{time.monotonic_ns()}"
        quota = PROPERTY_QUOTA
        for op, outcome, (requests, tokens, spent, pending) in apply_quota_ops(store, key, ops):
            if op == "reserve" and outcome[0]:
                assert requests <= quota.requests and tokens <= quota.tokens  # type: ignore[operator]
                assert spent + pending <= quota.cost_per_day + 1e-9  # type: ignore[operator]

    def test_quota_lease_expiry_releases_a_dead_holders_reservation(self, store: Store) -> None:
        quota = Quota(requests=1, tokens=10)
        assert store.reserve_quota("q", "dead", quota, tokens=10, cost=0, lease=0.3).granted
        assert not store.reserve_quota("q", "b", quota, tokens=10, cost=0).granted
        time.sleep(0.45)
        assert store.quota_state("q", quota).tokens == 0
        assert store.reserve_quota("q", "b", quota, tokens=10, cost=0).granted

    def test_quota_window_slides_and_the_wait_says_when(self, store: Store) -> None:
        quota = Quota(tokens=10, window=0.5)
        assert store.reserve_quota("q", "a", quota, tokens=10, cost=0).granted
        store.settle_quota("q", "a", quota, tokens=10, cost=0)
        refused = store.reserve_quota("q", "b", quota, tokens=5, cost=0)
        assert not refused.granted and 0 < refused.wait_seconds <= 0.5
        time.sleep(refused.wait_seconds + 0.05)
        assert store.reserve_quota("q", "b", quota, tokens=5, cost=0).granted

    def test_quota_settle_after_a_lapsed_lease_still_counts_the_call(self, store: Store) -> None:
        quota = Quota(tokens=100, cost_per_day=1.0)
        assert store.reserve_quota("q", "slow", quota, tokens=50, cost=0.5, lease=0.2).granted
        time.sleep(0.3)
        store.settle_quota("q", "slow", quota, tokens=40, cost=0.4)
        state = store.quota_state("q", quota)
        assert state.tokens == 40 and state.cost_spent == pytest.approx(0.4)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"tokens": -1, "cost": 0},
            {"tokens": float("nan"), "cost": 0},
            {"tokens": 1, "cost": float("inf")},
            {"tokens": 1, "cost": 0, "share": 0},
            {"tokens": 1, "cost": 0, "share": 1.5},
            {"tokens": 1, "cost": 0, "lease": 0},
            {"tokens": "1", "cost": 0},
        ],
    )
    def test_quota_validation(self, store: Store, kwargs: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput):
            store.reserve_quota("q", "r", Quota(tokens=10), **kwargs)

    @pytest.mark.parametrize(
        "caps", [{"requests": 0}, {"tokens": -5}, {"cost_per_day": float("nan")}, {"window": 0}]
    )
    def test_quota_caps_must_be_positive(self, caps: dict[str, float]) -> None:
        with pytest.raises(InvalidInput):
            Quota(**caps)

    # -- locks ----------------------------------------------------------------------------------

    def test_taking_a_held_lock_again_is_idempotent_for_its_owner(self, store: Store) -> None:
        """A command retried after a lost reply must not report our own lock as someone else's."""
        mine, theirs = store.lock("idem", lease=5), store.lock("idem", lease=5)
        assert mine.acquire(blocking=False)
        assert mine.acquire(blocking=False)
        assert not theirs.acquire(blocking=False)
        assert mine.release() and theirs.acquire(blocking=False)
        theirs.release()

    def test_lock_is_exclusive(self, store: Store) -> None:
        first, second = store.lock("L", lease=5), store.lock("L", lease=5)
        assert first.owner != second.owner
        assert first.acquire(blocking=False)
        assert first.held()
        assert not second.acquire(blocking=False)
        assert not second.acquire(timeout=0.1)
        assert not second.held()
        assert not second.release()
        assert first.release()
        assert second.acquire(blocking=False)
        assert second.release()

    def test_lease_expiry_lets_another_owner_in(self, store: Store) -> None:
        stale, fresh = store.lock("L", lease=0.3), store.lock("L", lease=5)
        assert stale.acquire()
        time.sleep(0.5)
        assert fresh.acquire(blocking=False)
        assert not stale.renew()
        assert not stale.release()  # must not release the new holder's lock
        assert fresh.held()
        assert fresh.release()

    def test_renewal_keeps_lock_past_its_lease(self, store: Store) -> None:
        holder, rival = store.lock("L", lease=0.3), store.lock("L", lease=5)
        assert holder.acquire(auto_renew=True)
        time.sleep(0.9)
        assert holder.held()
        assert not rival.acquire(blocking=False)
        assert holder.release()
        assert rival.acquire(blocking=False)
        rival.release()

    def test_manual_renew_extends_lease(self, store: Store) -> None:
        lock = store.lock("L", lease=0.3)
        assert lock.acquire()
        assert lock.renew(5)
        time.sleep(0.5)
        assert lock.held()
        assert lock.release()

    def test_start_renewal_stops_on_release(self, store: Store) -> None:
        lock = store.lock("L", lease=0.3)
        assert lock.acquire()
        lock.start_renewal()
        time.sleep(0.5)
        assert lock.held()
        lock.release()
        assert not any(t.name.startswith("sluice-lock-renewal") for t in threading.enumerate())

    def test_lock_context_manager(self, store: Store) -> None:
        with store.lock("L", lease=5) as held:
            assert held.held()
            with (
                pytest.raises(BackendUnavailable, match="could not acquire"),
                store.lock("L", timeout=0.1),
            ):
                pass
        assert not held.held()
        with store.lock("L", timeout=0.1):
            pass

    def test_lock_validation(self, store: Store) -> None:
        with pytest.raises(InvalidInput):
            store.lock("L", lease=0)
        with pytest.raises(InvalidInput):
            store.lock("")
        with pytest.raises(InvalidInput):
            store.lock("L").acquire(timeout=-1)

    # -- lists ----------------------------------------------------------------------------------

    def test_push_pop_many_is_fifo(self, store: Store) -> None:
        assert store.push("q", 1, 2, 3) == 3
        assert store.push("q", {"four": 4}, [5]) == 5
        assert store.length("q") == 5
        assert store.pop_many("q", 2) == [1, 2]
        assert store.length("q") == 3
        assert store.pop_many("q", 10) == [3, {"four": 4}, [5]]
        assert store.pop_many("q", 10) == []
        assert store.length("q") == 0
        assert not store.exists("q")

    def test_delete_list(self, store: Store) -> None:
        store.push("q", "a", "b")
        assert store.delete("q") == 1
        assert store.length("q") == 0
        assert store.push("q", "c") == 1
        assert store.pop_many("q", 5) == ["c"]

    def test_pop_many_validation(self, store: Store) -> None:
        with pytest.raises(InvalidInput):
            store.pop_many("q", 0)

    # -- concurrency across processes -----------------------------------------------------------

    def test_concurrent_increments_are_exact(self, store: Store, store_spec: StoreSpec) -> None:
        _run(_incr_worker, store_spec, 8, 1000)
        assert store.get_counter("mp-counter") == 8000

    def test_lock_serializes_read_modify_write(self, store: Store, store_spec: StoreSpec) -> None:
        _run(_lock_worker, store_spec, 4, 200)
        assert store.get("mp-value") == 800

    def test_concurrent_pop_many_hands_out_each_item_once(
        self, store: Store, store_spec: StoreSpec
    ) -> None:
        for start in range(0, 2000, 500):
            store.push("mp-queue", *range(start, start + 500))
        results = _run(_pop_worker, store_spec, 4, 7)
        popped = [item for chunk in results for item in chunk]
        assert sorted(popped) == list(range(2000))
        for chunk in results:  # each consumer sees the items in queue order
            assert chunk == sorted(chunk)

    def test_token_bucket_is_shared_by_processes(self, store: Store, store_spec: StoreSpec) -> None:
        assert sum(_run(_bucket_worker, store_spec, 4, 30)) == 50

    def test_quota_is_shared_by_processes_and_never_overshoots(
        self, store: Store, store_spec: StoreSpec
    ) -> None:
        assert sum(_run(_quota_worker, store_spec, 4, 8)) == 10
        state = store.quota_state("mp-quota", MP_QUOTA)
        assert state.requests == 10 and state.cost_pending == pytest.approx(10.0)
