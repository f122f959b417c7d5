"""The metrics write side (bucket counters in the store) and the scrape-time collector."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.monitoring import collector, recorder, sources
from sluice.monitoring.quantiles import quantile
from sluice.store import get_store


@pytest.fixture
def clean_store() -> Iterator[None]:
    store = get_store()
    store.delete(recorder.HISTOGRAMS_KEY, recorder.COUNTERS_KEY)
    yield
    recorder.flush()
    store.delete(recorder.HISTOGRAMS_KEY, recorder.COUNTERS_KEY)


def fake_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the sources that need a broker or workers."""
    by_type = {ct: Counter({"l1_hits": 2, "l2_hits": 1, "misses": 1}) for ct in ("analysis",)}
    by_type.update({ct: Counter() for ct in ("embedding", "response")})
    monkeypatch.setattr(
        sources,
        "cache_stats",
        lambda: {"enabled": True, "by_type": by_type, "global": {"hit_rate": 0.75}},
    )
    monkeypatch.setattr(
        sources,
        "task_stats",
        lambda: {
            "by_queue": {"high": {"pending": 4, "completed": 3}, "low": {"pending": 2}},
            "by_handler": {"echo": {"completed": 3}},
            "queue": {"running": 1},
        },
    )
    monkeypatch.setattr(sources, "workers_online", lambda timeout=0.5: ["w1@h", "w2@h"])
    monkeypatch.setattr(sources, "ai_admission_stats", lambda: {"openai": ADMISSION_REPORT})


#: What ``Admission.report()`` returns for one model with every limit (see the test below).
ADMISSION_REPORT = {
    "models": {
        "gpt-4o-mini": {
            "admitted": 3, "tokens_reserved": 900, "tokens_used": 300, "cost_used_micro_usd": 90,
            "rate_limited": 1, "probes": 1, "paused_ms": 5000,
            "refused": {"requests": 0, "tokens": 2, "cost": 0, "paused": 4, "store": 0},
            "limits": {"rpm": 10.0, "tpm": 1000.0, "usd_per_day": 1.0, "reserve": 0.2,
                       "window_seconds": 60.0},
            "window": {"requests": 3.0, "tokens": 300.0},
            "budget": {"spent_usd": 0.25, "pending_usd": 0.5, "remaining_usd": 0.25},
        }
    },
    "paused_for_seconds": 0.0,
}  # fmt: skip


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(collector.build_registry()).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_field_encoding_round_trips_awkward_label_values() -> None:
    labels = {"handler": "a:b|c=d%", "queue": "high"}
    field = f"{recorder.scope('task', labels)}:count"
    series, event = recorder.parse_field(field)
    assert event == "count"
    assert series == recorder.Series("task", (("handler", "a:b|c=d%"), ("queue", "high")))


def test_histogram_buckets_are_cumulative_and_shared_through_the_store(
    monkeypatch: pytest.MonkeyPatch, clean_store: None
) -> None:
    fake_sources(monkeypatch)
    for seconds in (0.0003, 0.003, 0.003, 0.3, 7.0):
        recorder.observe("db_query", seconds, {"operation": "select", "table": "users"})
    recorder.flush()
    scraped = scrape()
    labels = {("operation", "select"), ("table", "users")}

    def bucket(name: str, le: str) -> float:
        return scraped[(name, frozenset({*labels, ("le", le)}))]

    assert bucket("sluice_db_query_duration_seconds_bucket", "0.0005") == 1
    assert bucket("sluice_db_query_duration_seconds_bucket", "0.005") == 3
    assert bucket("sluice_db_query_duration_seconds_bucket", "0.5") == 4
    assert bucket("sluice_db_query_duration_seconds_bucket", "5.0") == 4
    assert bucket("sluice_db_query_duration_seconds_bucket", "+Inf") == 5
    assert scraped[("sluice_db_query_duration_seconds_count", frozenset(labels))] == 5
    assert scraped[("sluice_db_query_duration_seconds_sum", frozenset(labels))] == pytest.approx(
        7.3063
    )
    # The guide's db_query_latency: the same counts, in milliseconds.
    assert bucket("db_query_latency_bucket", "500.0") == 4
    assert scraped[("db_query_latency_sum", frozenset(labels))] == pytest.approx(7306.3)


def test_task_and_guide_metrics_from_sources(
    monkeypatch: pytest.MonkeyPatch, clean_store: None
) -> None:
    fake_sources(monkeypatch)
    with pytest.raises(RuntimeError), recorder.observe_task("high", "echo"):
        raise RuntimeError("boom")
    with recorder.observe_task("high", "echo"):
        pass
    recorder.flush()
    scraped = scrape()
    assert scraped[("async_queue_size", frozenset({("queue", "high")}))] == 4
    assert scraped[("sluice_queue_messages", frozenset({("queue", "low")}))] == 2
    assert (
        scraped[("sluice_tasks_total", frozenset({("queue", "high"), ("event", "completed")}))] == 3
    )
    assert scraped[("sluice_workers_online", frozenset())] == 2
    assert scraped[("ai_cache_hit_rate", frozenset())] == 0.75
    hits = frozenset({("content_type", "analysis"), ("tier", "l1")})
    assert scraped[("sluice_ai_cache_hits_total", hits)] == 2
    for outcome in ("success", "failure"):
        key = frozenset({("queue", "high"), ("handler", "echo"), ("outcome", outcome)})
        assert scraped[("sluice_task_duration_seconds_count", key)] == 1


def test_a_failing_source_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, clean_store: None
) -> None:
    fake_sources(monkeypatch)

    def down() -> Any:
        raise ConnectionError("broker down")

    monkeypatch.setattr(sources, "task_stats", down)
    scraped = scrape()
    assert scraped[("sluice_metrics_source_up", frozenset({("source", "tasks")}))] == 0
    assert scraped[("sluice_metrics_source_up", frozenset({("source", "ai_cache")}))] == 1
    assert not any(name == "async_queue_size" for name, _ in scraped)


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = (0.1, 0.2, 0.5)
    counts = Counter({"0.1": 10, "0.2": 0, "0.5": 10})
    assert quantile(0.5, bounds, counts) == pytest.approx(0.1)
    assert quantile(0.75, bounds, counts) == pytest.approx(0.35)
    assert quantile(0.99, bounds, Counter({"+Inf": 3})) == 0.5
    assert quantile(0.5, bounds, Counter()) is None


def test_observe_query_labels_by_operation_and_table(clean_store: None) -> None:
    from sluice.query.normalizer import QueryNormalizer

    shape = QueryNormalizer("postgresql").analyze(
        "SELECT * FROM users u JOIN orders o ON u.id = o.uid"
    )
    recorder.observe_query(0.5, shape, slow=True)
    recorder.flush()
    recorded = sources.recorded_counters()
    key = recorder.Series("slow_query", (("operation", "select"), ("table", "orders")))
    assert recorded[key]["n"] == 1


def test_admission_metrics_come_from_the_admission_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sluice.ai import Admission, Usage, request_tokens
    from sluice.ai.admission import EVENTS, REFUSAL_REASONS
    from sluice.errors import RetryLater
    from sluice.pricing import DEFAULT_PRICES
    from sluice.settings import AILimit
    from sluice.store import DiskStore

    fake_sources(monkeypatch)
    store = DiskStore(tmp_path / "store")
    limit = AILimit("openai", "gpt-4o-mini", rpm=2, tpm=1000, usd_per_day=1.0)
    control = Admission("openai", [limit], DEFAULT_PRICES, store)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    control.admit({**body, "max_tokens": 100}).settle(Usage(10, 20, 30))
    control.admit({**body, "max_tokens": 100})
    with pytest.raises(RetryLater):
        control.admit({**body, "max_tokens": 100})
    report = control.report()
    entry = report["models"]["gpt-4o-mini"]
    # The stand-in above has the same shape as a real report.
    assert entry.keys() == ADMISSION_REPORT["models"]["gpt-4o-mini"].keys()  # type: ignore[index]
    assert set(entry["refused"]) == set(REFUSAL_REASONS)
    assert len(EVENTS) == len(entry) - 4 + len(REFUSAL_REASONS)
    monkeypatch.setattr(sources, "ai_admission_stats", lambda: {"openai": report})
    scraped = scrape()
    labels = {("provider", "openai"), ("model", "gpt-4o-mini")}
    prompt, _ = request_tokens(body)
    assert scraped[("sluice_ai_tokens_reserved_total", frozenset(labels))] == 2 * (prompt + 100)
    assert scraped[("sluice_ai_tokens_used_total", frozenset(labels))] == 30
    refused = frozenset({*labels, ("reason", "requests")})
    assert scraped[("sluice_ai_admissions_refused_total", refused)] == 1
    assert scraped[("sluice_ai_budget_usd", frozenset(labels))] == 1.0
    used = scraped[("sluice_ai_budget_used_usd", frozenset(labels))]
    remaining = scraped[("sluice_ai_budget_remaining_usd", frozenset(labels))]
    assert used > 0 and used + remaining == pytest.approx(1.0)
    assert scraped[("sluice_ai_paused_seconds_total", frozenset({("provider", "openai")}))] == 0
    store.close()


def test_lost_cache_writes_are_a_metric(monkeypatch: pytest.MonkeyPatch, clean_store: None) -> None:
    fake_sources(monkeypatch)
    stats = sources.cache_stats()
    stats["by_type"]["analysis"]["lost_writes"] = 3
    monkeypatch.setattr(sources, "cache_stats", lambda: stats)
    scraped = scrape()
    lost = frozenset({("content_type", "analysis"), ("event", "lost_writes")})
    assert scraped[("sluice_ai_cache_events_total", lost)] == 3
