"""Admission control of AI provider calls, on the disk store and the limit-enforcing fake provider.

The cluster-wide behaviour (several worker processes on Redis) is in
``tests/integration/test_ai_admission_redis.py``; here one process exercises every rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bpe_openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ai import Admission, OpenAIProvider, Usage, count_tokens, get_provider, request_tokens
from sluice.ai.admission import BYTES_PER_TOKEN_ESTIMATE, DEFAULT_MAX_TOKENS
from sluice.errors import BackendUnavailable, InvalidInput, RetryLater
from sluice.pricing import DEFAULT_PRICES, cost_usd
from sluice.settings import AILimit, load_settings
from sluice.store import DiskStore
from sluice.taskcontext import current_priority
from tests.fake_openai import KEY, FakeOpenAI, Reply, _usage_of, running_fake_openai

MODEL = "gpt-4o-mini"
CRITICAL, HIGH, NORMAL, BATCH = 9, 7, 5, 0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskStore]:
    disk = DiskStore(tmp_path / "store", prefix="adm:")
    yield disk
    disk.close()


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """The fake with limits far away, so it reports real usage: answers use all of max_tokens."""
    with running_fake_openai() as fake:
        fake.tpm, fake.completion_tokens = 10**9, 200
        yield fake


def admission(
    store: DiskStore, window: float = 60.0, lease: float = 600.0, **caps: Any
) -> Admission:
    return Admission(
        "openai", [AILimit("openai", MODEL, **caps)], DEFAULT_PRICES, store, lease, window
    )


def provider(server: FakeOpenAI, control: Admission) -> OpenAIProvider:
    return OpenAIProvider(
        server.url, KEY, MODEL, "text-embedding-3-small", timeout=5, max_retries=2,
        backoff_base=0.01, admission=control,
    )  # fmt: skip


def ask(client: OpenAIProvider, text: str = "review this", max_tokens: int = 100) -> Any:
    return client.complete([{"role": "user", "content": text}], max_tokens=max_tokens)


@pytest.fixture
def priority() -> Iterator[Any]:
    tokens: list[Any] = []

    def set_priority(level: int) -> None:
        tokens.append(current_priority.set(level))

    yield set_priority
    for token in reversed(tokens):
        current_priority.reset(token)


# -- counting --------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
def test_known_models_are_counted_with_their_real_tokenizer(text: str) -> None:
    models = (
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
    )
    for model, name in models:
        encoding = bpe_openai.get_encoding(name)
        assert count_tokens(text, model) == len(encoding.encode_ordinary(text))


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
def test_unknown_models_get_the_documented_estimate(text: str) -> None:
    expected = math.ceil(len(text.encode()) / BYTES_PER_TOKEN_ESTIMATE)
    assert count_tokens(text, "some-local-model") == expected


@settings(max_examples=30, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=200)),
        min_size=1,
        max_size=4,
    ),
    max_tokens=st.one_of(st.none(), st.integers(1, 5000)),
)
def test_reserved_prompt_matches_what_the_provider_counts(
    messages: list[tuple[str, str]], max_tokens: int | None
) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": role, "content": text} for role, text in messages],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    prompt, output = request_tokens(body)
    # The fake counts like OpenAI; the reservation is exactly its prompt plus the whole max_tokens.
    assert prompt == _usage_of("/v1/chat/completions", body, 10**9)[0]
    assert output == (max_tokens or DEFAULT_MAX_TOKENS)


def test_embedding_requests_reserve_their_inputs_only() -> None:
    prompt, output = request_tokens({"model": "text-embedding-3-small", "input": ["a b", "c"]})
    assert output == 0 and prompt == count_tokens("a b", "text-embedding-3-small") + 1


# -- reserve, settle, release --------------------------------------------------------------------


def test_a_call_is_reserved_then_settled_with_the_reported_usage(
    store: DiskStore, server: FakeOpenAI
) -> None:
    server.completion_tokens = 50
    control = admission(store, tpm=10_000, usd_per_day=1.0)
    completion = ask(provider(server, control), max_tokens=400)
    state = control.usage(MODEL)
    used = completion.usage
    assert used.completion_tokens == server.completion_tokens < 400
    assert state.tokens == used.prompt_tokens + used.completion_tokens  # the difference came back
    assert state.cost_pending == 0
    price = DEFAULT_PRICES[MODEL]
    assert state.cost_spent == pytest.approx(
        cost_usd(price, used.prompt_tokens, used.completion_tokens)
    )
    totals, _ = control.stats.totals()
    assert totals[f"openai/{MODEL}:tokens_reserved"] == used.prompt_tokens + 400
    assert totals[f"openai/{MODEL}:tokens_used"] == used.total_tokens


def test_a_call_that_fails_before_the_provider_releases_its_reservation(
    store: DiskStore, server: FakeOpenAI
) -> None:
    control = admission(store, tpm=10_000)
    server.script = [Reply(400, {"error": {"message": "bad request"}})]
    with pytest.raises(Exception, match="bad request"):
        ask(provider(server, control))
    assert control.usage(MODEL).tokens == 0 and control.usage(MODEL).requests == 0


def test_refusal_raises_retry_later_and_sends_nothing(store: DiskStore, server: FakeOpenAI) -> None:
    control = admission(store, tpm=1000)
    client = provider(server, control)
    admitted = 0
    with pytest.raises(RetryLater) as refused:
        for _ in range(20):
            ask(client, max_tokens=200)
            admitted += 1
    assert len(server.requests) == admitted > 0
    assert 0 < refused.value.wait_seconds <= 60 + 1
    assert "tokens" in refused.value.reason
    assert control.usage(MODEL).tokens <= 1000


@pytest.mark.parametrize(
    ("caps", "reason"),
    [({"rpm": 2}, "requests"), ({"tpm": 500}, "tokens"), ({"usd_per_day": 0.0002}, "cost")],
)
def test_every_limit_refuses_with_its_reason(
    store: DiskStore, server: FakeOpenAI, caps: dict[str, float], reason: str
) -> None:
    control = admission(store, **caps)
    client = provider(server, control)
    with pytest.raises(RetryLater) as refused:
        for _ in range(10):
            ask(client, max_tokens=200)
    assert reason in refused.value.reason
    totals, _ = control.stats.totals()
    assert totals[f"openai/{MODEL}:refused_{reason}"] == 1


def test_a_request_larger_than_its_limit_is_invalid_not_delayed(
    store: DiskStore, server: FakeOpenAI
) -> None:
    control = admission(store, tpm=1000)
    with pytest.raises(InvalidInput, match="can never fit"):
        ask(provider(server, control), max_tokens=5000)
    assert server.requests == []


def test_a_dead_holders_reservation_lapses_with_its_lease(store: DiskStore) -> None:
    control = admission(store, tpm=1000, lease=0.3)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 900}
    control.admit(body)  # never settled: its worker "died"
    with pytest.raises(RetryLater):
        control.admit(body)
    time.sleep(0.4)
    control.admit(body).release()
    assert control.usage(MODEL).tokens == 0


def test_models_without_limits_are_not_reserved(store: DiskStore, server: FakeOpenAI) -> None:
    control = Admission("openai", [], DEFAULT_PRICES, store)
    for _ in range(3):
        ask(provider(server, control))
    assert len(server.requests) == 3


# -- priority headroom ---------------------------------------------------------------------------


@pytest.mark.parametrize("low", [BATCH, 3, NORMAL])
@pytest.mark.parametrize("urgent", [HIGH, CRITICAL])
def test_headroom_is_kept_for_high_and_critical(
    store: DiskStore, server: FakeOpenAI, priority: Any, low: int, urgent: int
) -> None:
    control = admission(store, rpm=10, reserve=0.2)
    client = provider(server, control)
    priority(low)
    for _ in range(8):
        ask(client)
    with pytest.raises(RetryLater):
        ask(client)  # BATCH/LOW/NORMAL stop at 80%
    priority(urgent)
    ask(client)
    ask(client)  # urgent work uses the last 20%
    with pytest.raises(RetryLater):
        ask(client)
    assert len(server.requests) == 10


# -- 429: a cluster-wide pause -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "2"}),
        Reply(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "2000"}),
        Reply(503, {"error": {"message": "overloaded"}}, {"Retry-After": "2"}),
    ],
)
def test_a_rate_limit_pauses_every_caller_then_allows_one_probe(
    store: DiskStore, server: FakeOpenAI, reply: Reply
) -> None:
    control = admission(store, tpm=100_000)
    server.script = [reply]
    first = provider(server, control)
    with pytest.raises(RetryLater) as paused:
        ask(first)
    assert 2 <= paused.value.wait_seconds <= 2.6
    assert control.usage(MODEL).tokens == 0  # a refused call is not counted
    other = provider(server, admission(store, tpm=100_000))  # another worker, same store
    for client in (first, other):
        with pytest.raises(RetryLater, match="paused"):
            ask(client)
    assert len(server.requests) == 1
    time.sleep(1.2)  # into the last second: one probe may go, and only one
    ask(other)
    with pytest.raises(RetryLater, match="paused"):
        ask(first)
    assert len(server.requests) == 2
    time.sleep(1.0)
    ask(first)
    ask(other)
    totals, _ = control.stats.totals()
    assert totals[f"openai/{MODEL}:probes"] == 1
    assert totals[f"openai/{MODEL}:paused_ms"] == 2000


def test_a_refused_probe_extends_the_pause(store: DiskStore, server: FakeOpenAI) -> None:
    control = admission(store, tpm=100_000)
    client = provider(server, control)
    server.script = [Reply(429, {}, {"Retry-After": "1"}), Reply(429, {}, {"Retry-After": "2"})]
    with pytest.raises(RetryLater):
        ask(client)
    time.sleep(0.6)
    with pytest.raises(RetryLater, match="answered 429"):
        ask(client)  # the probe, refused again
    time.sleep(0.6)  # past the first pause, inside the extension
    with pytest.raises(RetryLater, match="paused"):
        ask(client)
    assert len(server.requests) == 2


def test_a_429_without_admission_control_is_still_retried_in_place(server: FakeOpenAI) -> None:
    server.script = [Reply(429, {}, {"Retry-After": "0.1"})]
    client = OpenAIProvider(server.url, KEY, MODEL, "e", timeout=5, max_retries=2)
    assert ask(client).text
    assert len(server.requests) == 2


def test_absurd_retry_after_is_capped(store: DiskStore, server: FakeOpenAI) -> None:
    server.script = [Reply(429, {}, {"Retry-After": "86400"})]
    client = provider(server, admission(store, tpm=100_000))
    client.retry_after_max = 30
    with pytest.raises(RetryLater) as paused:
        ask(client)
    assert paused.value.wait_seconds <= 31


def test_the_fake_provider_enforces_its_tpm_with_retry_after(server: FakeOpenAI) -> None:
    server.tpm = 500
    client = OpenAIProvider(server.url, KEY, MODEL, "e", timeout=5, max_retries=0)
    ask(client, max_tokens=100)
    ask(client, max_tokens=100)
    with pytest.raises(Exception, match="429"):
        for _ in range(10):
            ask(client, max_tokens=100)
    assert server.rejected == 1


# -- settings and wiring ---------------------------------------------------------------------------


def test_get_provider_puts_openai_under_the_configured_limits(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    loaded = load_settings(
        {
            "SLUICE_DATA_DIR": str(tmp_path),
            "SLUICE_AI_PROVIDER": "openai",
            "SLUICE_AI_BASE_URL": server.url,
            "SLUICE_AI_API_KEY": KEY,
            "SLUICE_AI_LIMITS": f"openai:{MODEL}=rpm:2,tpm:200000,usd_per_day:50,reserve:0.5",
        }
    )
    client = get_provider(loaded)
    assert isinstance(client, OpenAIProvider) and client.admission is not None
    ask(client)
    with pytest.raises(RetryLater):
        ask(client)  # NORMAL work may use half of 2 requests per minute
    assert len(server.requests) == 1


def test_a_cache_hit_reserves_and_spends_nothing(store: DiskStore, server: FakeOpenAI) -> None:
    from sluice.cache import ANALYSIS, AIResultCache, CacheKeyGenerator

    control = admission(store, rpm=100, tpm=100_000, usd_per_day=1.0)
    client = provider(server, control)
    cache = AIResultCache(store=store, enabled=True)
    code = "x = eval(input())\n"
    key = CacheKeyGenerator.analysis(code, "python", None, MODEL)
    for _ in range(3):
        cache.sync.get_or_compute(
            ANALYSIS, key, lambda: client.analyze(code, "python").to_dict(), model=MODEL
        )
    state = control.usage(MODEL)
    assert len(server.requests) == 1 and state.requests == 1
    first = server.requests[0].usage or {}
    assert state.tokens == first["total_tokens"]


class FlakyStore:
    """A store whose quota and value operations fail (an outage) while ``down`` is True."""

    def __init__(self, store: DiskStore) -> None:
        self.inner, self.down = store, False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in {"get", "add", "set", "reserve_quota", "settle_quota", "release_quota"}:

            def guarded(*args: Any, **kwargs: Any) -> Any:
                if self.down:
                    raise BackendUnavailable("store down (test)")
                return attribute(*args, **kwargs)

            return guarded
        return attribute


def test_a_store_outage_holds_limited_calls_and_never_fails_a_finished_one(
    store: DiskStore, server: FakeOpenAI
) -> None:
    flaky = FlakyStore(store)
    limited = admission(flaky, tpm=10_000)  # type: ignore[arg-type]
    unlimited = Admission("openai", [], DEFAULT_PRICES, flaky)  # type: ignore[arg-type]
    flaky.down = True
    with pytest.raises(RetryLater, match="store down"):
        ask(provider(server, limited))  # no ledger, no call: the limit is a promise
    assert ask(provider(server, unlimited)).text  # the pause check fails open
    flaky.down = False
    ticket = limited.admit({"model": MODEL, "messages": [], "max_tokens": 10})
    flaky.down = True
    ticket.settle(Usage(1, 1, 2))  # logged, not raised: the call already happened
    ticket.release()
    flaky.down = False
    assert limited.usage(MODEL).requests == 1  # the reservation stands until its lease lapses
