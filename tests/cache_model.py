"""A hypothesis state machine comparing cached answers with uncached ones (the AI cache, L1 + L2).

Two caches over one store stand for two processes (each its own L1). The "provider" answers
``(code, model, provider) -> the current version of that answer``; an invalidation is how a user says
old answers are wrong, so it moves the affected answers to a new version. Every read through the
cache must equal what the provider answers now: a wrong key (two inputs sharing an entry), a stale
L1, or an invalidation that misses an entry shows up as a difference. Cross-process L1 invalidation
is eventual by design (pub/sub, or a generation re-read within ``GENERATION_REFRESH``): the machine
lets that second pass (``refresh``) after each invalidation, before comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sluice.cache import ANALYSIS, EMBEDDING, AIResultCache, CacheConfig, CacheKeyGenerator
from sluice.store import Store

CODES = ["a = 1", "a = 2", "", "é"]
MODELS = [None, "gpt-4o", "gpt-4o-mini"]
PROVIDERS = [None, {"provider": "local", "rules": "r1"}, {"provider": "local", "rules": "r2"}]
#: Hypothesis budget: fixed, and modest enough for CI.
MACHINE_SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None)

inputs = st.tuples(
    st.sampled_from(range(len(CODES))),
    st.sampled_from(range(len(MODELS))),
    st.sampled_from(range(len(PROVIDERS))),
)
kinds = st.sampled_from([ANALYSIS, EMBEDDING])
process = st.sampled_from([0, 1])


def cache_machine(make_store: Callable[[], Store]) -> type[RuleBasedStateMachine]:
    """A machine class whose caches run on stores made by ``make_store`` (one per example)."""

    class CachedVersusUncached(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.store = make_store()
            config = CacheConfig(stats_flush_interval=3600)
            self.caches = [
                AIResultCache(store=self.store, config=config, enabled=True) for _ in range(2)
            ]
            self.versions: dict[tuple[str, tuple[int, int, int]], int] = {}
            self.provider_calls = 0

        def answer(self, kind: str, which: tuple[int, int, int]) -> dict[str, Any]:
            """The uncached answer now."""
            self.provider_calls += 1
            return {"input": [kind, *which], "version": self.versions.get((kind, which), 0)}

        def key(self, kind: str, which: tuple[int, int, int]) -> Any:
            code, model, provider = CODES[which[0]], MODELS[which[1]], PROVIDERS[which[2]]
            if kind == ANALYSIS:
                return CacheKeyGenerator.analysis(code, "python", None, model, provider)
            return CacheKeyGenerator.embedding(code, model, provider)

        @rule(p=process, kind=kinds, which=inputs)
        def read_through(self, p: int, kind: str, which: tuple[int, int, int]) -> None:
            got = self.caches[p].sync.get_or_compute(
                kind, self.key(kind, which), lambda: self.answer(kind, which)
            )
            assert got == self.answer(kind, which)

        @rule(p=process, kind=kinds, batch=st.lists(inputs, min_size=1, max_size=6))
        def read_through_many(self, p: int, kind: str, batch: list[tuple[int, int, int]]) -> None:
            """What a chunk of files does: one bulk lookup, then a fill for each miss."""
            sync = self.caches[p].sync
            keys = [self.key(kind, which) for which in batch]
            looked = sync.found_many(kind, keys)
            for which, key, (found, got) in zip(batch, keys, looked, strict=True):
                if not found:
                    got = sync.fill_missing(kind, key, lambda w=which: self.answer(kind, w))
                assert got == self.answer(kind, which)

        @rule(p=process, kind=kinds, which=inputs)
        def read_only(self, p: int, kind: str, which: tuple[int, int, int]) -> None:
            found, got = self.caches[p].lookup(kind, self.key(kind, which))
            if found:
                assert got == self.answer(kind, which)

        @rule(p=process, kind=kinds, which=inputs)
        def write(self, p: int, kind: str, which: tuple[int, int, int]) -> None:
            self.caches[p].put(kind, self.key(kind, which), self.answer(kind, which))

        @rule(p=process)
        def clear_l1(self, p: int) -> None:
            self.caches[p].l1.clear()

        @rule(p=process, kind=kinds, which=inputs)
        def invalidate_one(self, p: int, kind: str, which: tuple[int, int, int]) -> None:
            self.caches[p].invalidate(self.key(kind, which).key)
            self.versions[(kind, which)] = self.versions.get((kind, which), 0) + 1
            self.refresh()

        @rule(p=process, kind=kinds)
        def invalidate_type(self, p: int, kind: str) -> None:
            self.caches[p].invalidate_type(kind)
            self.bump(lambda k: k == kind)

        @rule(p=process)
        def invalidate_all(self, p: int) -> None:
            self.caches[p].invalidate_all()
            self.bump(lambda k: True)

        def bump(self, affected: Callable[[str], bool]) -> None:
            for kind in (ANALYSIS, EMBEDDING):
                if affected(kind):
                    for c in range(len(CODES)):
                        for m in range(len(MODELS)):
                            for pr in range(len(PROVIDERS)):
                                which = (c, m, pr)
                                self.versions[(kind, which)] = (
                                    self.versions.get((kind, which), 0) + 1
                                )
            self.refresh()

        def refresh(self) -> None:
            """GENERATION_REFRESH seconds later: every process has re-read the generations."""
            for cache in self.caches:
                cache.generations.refresh()

        @invariant()
        def l2_stays_healthy(self) -> None:
            if hasattr(self, "caches"):
                assert all(c.breaker.state == "closed" for c in self.caches)

        def teardown(self) -> None:
            if hasattr(self, "caches"):
                for cache in self.caches:
                    cache.close()
                self.store.clear_namespace()
                self.store.close()

    return CachedVersusUncached
