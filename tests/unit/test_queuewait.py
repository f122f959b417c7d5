"""Queue-wait bookkeeping without a broker: labels, ready stamps and the waiting set's pairing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.monitoring import queuewait
from sluice.store import get_store
from sluice.workers.priority import Priority, broker_priority
from tests.worker_fixtures import settings_env

BROKERS = ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"]
LEVELS = {p.name.lower() for p in Priority}


@pytest.mark.parametrize("url", BROKERS)
@pytest.mark.parametrize("level", list(Priority))
def test_the_label_is_the_level_the_message_was_published_with(url: str, level: Priority) -> None:
    with settings_env(SLUICE_BROKER_URL=url):
        assert queuewait.priority_label(broker_priority(level), url) == level.name.lower()


@settings(max_examples=60)
@given(
    value=st.one_of(st.none(), st.integers(min_value=-5, max_value=300)),
    url=st.sampled_from(BROKERS),
)
def test_any_message_priority_maps_to_one_of_the_five_levels(value: int | None, url: str) -> None:
    assert queuewait.priority_label(value, url) in LEVELS


def test_a_countdown_message_waits_from_its_eta_not_its_publish() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    headers: dict[str, object] = {"eta": later.isoformat(), "id": "t"}
    queuewait.stamp_ready_time(headers=headers, properties={"priority": 5})
    assert abs(int(headers[queuewait.READY_HEADER]) / 1000 - later.timestamp()) < 0.01  # type: ignore[arg-type]
    past = {"eta": (datetime.now(UTC) - timedelta(seconds=30)).isoformat()}
    queuewait.stamp_ready_time(headers=past, properties={})
    assert abs(int(past[queuewait.READY_HEADER]) / 1000 - time.time()) < 1  # type: ignore[arg-type]


def _published(task_id: str, priority: int, queue: str) -> dict[str, object]:
    headers: dict[str, object] = {"id": task_id}
    queuewait.stamp_ready_time(headers=headers, properties={"priority": priority})
    return headers


def _start(headers: dict[str, object], queue: str) -> None:
    request = SimpleNamespace(
        delivery_info={"routing_key": queue},
        **{k: v for k, v in headers.items() if k.startswith("sluice_")},
    )
    queuewait.observe_start(task_id=str(headers["id"]), task=SimpleNamespace(request=request))


@pytest.mark.parametrize("start_first", [False, True], ids=["publish-then-start", "start-first"])
def test_the_waiting_set_pairs_publish_and_start_in_either_order(start_first: bool) -> None:
    # A networked broker (the embedded one keeps no waiting set); the store is the local one.
    with settings_env(SLUICE_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"):
        get_store().delete(queuewait.WAITING_KEY)
        old = _published("old", 3, "priority")
        time.sleep(0.3)
        new = _published("new", 3, "priority")
        for headers in (old, new):
            queuewait.count_waiting(headers=headers, routing_key="priority")
        ages = queuewait.oldest_waiting()
        assert 0.3 <= ages[("priority", "low")] < 5
        assert ages[("priority", "critical")] == 0
        if start_first:  # the worker started it before the producer counted it
            late = _published("late", 9, "priority")
            _start(late, "priority")
            assert queuewait.oldest_waiting()[("priority", "critical")] == 0
            queuewait.count_waiting(headers=late, routing_key="priority")
        _start(old, "priority")
        assert 0 <= queuewait.oldest_waiting()[("priority", "low")] < ages[("priority", "low")]
        _start(new, "priority")
        assert queuewait.oldest_waiting()[("priority", "low")] == 0
        assert get_store().hgetall_counters(queuewait.WAITING_KEY) == {}  # nothing left behind
