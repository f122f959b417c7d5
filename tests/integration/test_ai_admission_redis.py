"""Admission control across real worker processes sharing one Redis, against the fake provider.

Every worker process builds its own provider from the settings; only the ledger and the pause in
Redis make them act as one client. The fake provider enforces the same limit and answers 429 when
it is exceeded, so "no 429" proves the limit held cluster-wide. Limits count over a 3-second window
(``SLUICE_AI_LIMIT_WINDOW``) so the window slides several times within the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice.ai.admission import STATS_KEY
from sluice.store import Store
from sluice.workers import DeadLetterQueue, Priority, submit_task
from tests.fake_openai import KEY, FakeOpenAI, Reply, running_fake_openai
from tests.integration.test_workers_redis import Cluster, cluster  # noqa: F401 - the fixture
from tests.worker_fixtures import wait_for

pytestmark = pytest.mark.integration

WINDOW = 3.0
#: Per window: background work may hold 1000 tokens (8 calls of ~125), urgent work 250 more.
TPM = 1250
MODEL = "gpt-4o-mini"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai(latency=0.05) as server:
        server.window, server.tpm, server.completion_tokens = WINDOW, TPM, 100
        yield server


@pytest.fixture
def cluster_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "SLUICE_AI_PROVIDER": "openai",
        "SLUICE_AI_BASE_URL": fake.url,
        "SLUICE_AI_API_KEY": KEY,
        "SLUICE_AI_MODEL": MODEL,
        "SLUICE_AI_LIMITS": f"openai:{MODEL}=tpm:{TPM},reserve:0.2",
        "SLUICE_AI_LIMIT_WINDOW": str(WINDOW),
    }


def submit(count: int, priority: Priority = Priority.NORMAL, first: int = 0) -> list[str]:
    ids = [f"{priority.name}-{n}" for n in range(first, first + count)]
    for ident in ids:
        submit_task(
            "t_ai_call", {"id": ident, "text": f"review {ident}", "max_tokens": 100}, priority
        )
    return ids


def admission_totals(store: Store) -> dict[str, int]:
    """The admission counters every worker flushed to the store (at most a second late)."""
    scope = f"openai/{MODEL}:"
    return {
        field.removeprefix(scope): value
        for field, value in store.hgetall_counters(STATS_KEY).items()
        if field.startswith(scope)
    }


def test_workers_share_one_tpm_limit_and_the_provider_never_says_429(
    cluster: Cluster,  # noqa: F811
    fake: FakeOpenAI,
) -> None:
    for _ in range(2):
        cluster.worker(concurrency=2)
    ids = submit(30)
    wait_for(lambda: len(cluster.runs()) == len(ids), 90, "every call to complete")
    assert sorted(cluster.runs()) == sorted(ids) and set(cluster.runs().values()) == {1}
    assert fake.rejected == 0
    assert len(fake.requests) == len(ids)
    totals = wait_for(
        lambda: (t := admission_totals(cluster.store)).get("admitted") == len(ids) and t,
        10,
        "every worker's counters",
    )
    # The limit bound (calls were held back), and every held call still ran exactly once.
    assert totals["refused_tokens"] > 0 and totals["admitted"] == len(ids)
    assert DeadLetterQueue().count() == 0


def test_a_429_pauses_every_worker_with_one_probe_and_loses_nothing(
    cluster: Cluster,  # noqa: F811
    fake: FakeOpenAI,
) -> None:
    fake.tpm = None  # only the scripted 429
    fake.latency = 0.2
    for _ in range(2):
        cluster.worker(concurrency=2)
    warm = submit(4, Priority.HIGH)  # every pool process has made a call
    wait_for(lambda: len(cluster.runs()) == len(warm), 60, "the warm-up calls")
    fake.requests.clear()
    fake.script = [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "5"})]
    # One call meets the 429; the rest are submitted once its worker has recorded the pause, so
    # none of them was already on its way when the 429 came.
    ids = submit(1)
    wait_for(lambda: cluster.store.get("ai:pause:openai"), 30, "the pause to be recorded")
    ids += submit(11, first=1)
    wait_for(lambda: len(cluster.runs()) == len(warm) + len(ids), 60, "every call to complete")
    assert set(cluster.runs().values()) == {1}
    refused_at = fake.requests[0].at
    inside = [r for r in fake.requests[1:] if r.at < refused_at + 5.0]
    assert len(inside) <= 1  # the probe
    assert len(fake.requests) == len(ids) + 1  # the refused call ran again, once
    totals = wait_for(
        lambda: (
            (t := admission_totals(cluster.store)).get("admitted") == len(warm) + len(ids) + 1 and t
        ),
        10,
        "every worker's counters",
    )
    assert totals["paused_ms"] == 5000 and totals["rate_limited"] == 1
    assert totals.get("probes", 0) <= 1 and totals["refused_paused"] > 0
    assert DeadLetterQueue().count() == 0


def test_critical_calls_use_the_headroom_while_background_work_saturates_its_share(
    cluster: Cluster,  # noqa: F811
    fake: FakeOpenAI,
) -> None:
    for _ in range(2):
        cluster.worker(concurrency=2)
    background = submit(24, Priority.BATCH)
    wait_for(
        lambda: admission_totals(cluster.store).get("refused_tokens", 0) > 0,
        30,
        "background work to fill its share",
    )
    urgent = submit(2, Priority.CRITICAL)
    wait_for(lambda: all(i in cluster.runs() for i in urgent), 30, "the CRITICAL calls")
    # Every CRITICAL call ran while the background backlog was still held back by its share.
    assert sum(i in cluster.runs() for i in background) < len(background)
    wait_for(lambda: len(cluster.runs()) == 26, 90, "the background backlog to drain")
    assert fake.rejected == 0 and DeadLetterQueue().count() == 0
