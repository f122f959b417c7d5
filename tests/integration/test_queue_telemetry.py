"""Queue-wait telemetry against ground truth, on Redis and on RabbitMQ, with a real worker.

The test is the producer: it notes when it published each task, handlers note when they started
(``t_stamp``), so the truth is known per task. The scrape must agree within 5%: the age of the
oldest waiting message per queue and priority, the wait histogram's count and sum, and the pool's
saturation (busy slots / slots).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.monitoring.collector import build_registry
from sluice.store import get_store
from sluice.workers import Priority, submit_task
from sluice.workers.brokers import physical_queue
from tests.conftest import Broker, WorkerProcess, service_env
from tests.worker_fixtures import settings_env, wait_for

pytestmark = pytest.mark.integration
SLOTS = 4
TOLERANCE = 0.05


@pytest.fixture
def cluster(
    tmp_path: Path, broker: Broker, redis_url: str, key_prefix: str, pg_schema: str
) -> Iterator[tuple[Broker, Path, dict[str, str]]]:
    settings = {
        "SLUICE_BROKER_URL": broker.url,
        "SLUICE_RESULT_BACKEND": broker.result_backend,
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_KEY_PREFIX": key_prefix,
        "SLUICE_DATABASE_URL": pg_schema,
        "SLUICE_HANDLER_MODULES": "tests.worker_handlers",
        # No watchdog canaries during the measurement: they are real waits the truth does not know.
        "SLUICE_WATCHDOG_INTERVAL": "3600",
    }
    env = service_env(tmp_path, **settings)
    with settings_env(reconfigure_celery=True, **settings):
        import tests.worker_handlers  # noqa: F401 - registers t_stamp in this process

        yield broker, tmp_path, env


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by (sample name, sorted labels)."""
    text = generate_latest(build_registry()).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def close(measured: float, truth: float | tuple[float, float]) -> bool:
    low, high = truth if isinstance(truth, tuple) else (truth, truth)
    return low * (1 - TOLERANCE) <= measured <= high * (1 + TOLERANCE)


def shown(truth: float | tuple[float, float]) -> str:
    return f"{truth[0]:.3f}..{truth[1]:.3f}" if isinstance(truth, tuple) else f"{truth:.3f}"


def test_queue_wait_metrics_match_ground_truth(
    cluster: tuple[Broker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    broker, tmp_path, env = cluster
    worker = WorkerProcess(env, tmp_path / "worker.log", "critical,high,normal,low", SLOTS)
    published: dict[str, tuple[float, str]] = {}

    def publish(task_id: str, level: Priority, sleep: float) -> None:
        published[task_id] = (time.time(), level.name.lower())
        submit_task("t_stamp", {"id": task_id, "sleep": sleep}, level)

    try:
        worker.wait_ready()
        started = lambda: get_store().hgetall_counters("started_ms")  # noqa: E731
        pool = "priority" if broker.kind == "amqp" else "critical,high,normal,low"
        # 1. Three long tasks on four slots: saturation 3/4.
        for i in range(3):
            publish(f"long{i}", Priority.NORMAL, 7.0)
        wait_for(lambda: len(started()) == 3, 30, "three long tasks running")
        time.sleep(2.5)  # the worker reports every second
        first = scrape()
        # 2. A fourth fills the pool; then a backlog of LOW and HIGH waits behind it.
        publish("long3", Priority.NORMAL, 3.0)
        wait_for(lambda: len(started()) == 4, 30, "four long tasks running")
        for i in range(6):
            publish(f"low{i}", Priority.LOW, 0.05)
            publish(f"high{i}", Priority.HIGH, 0.05)
        time.sleep(2.0)
        before = time.time()
        second = scrape()
        after = time.time()  # the age is read at some moment of this scrape
        wait_for(lambda: len(started()) == len(published), 60, "every task started")
        time.sleep(2.0)  # histogram buckets are flushed about once a second
        third = scrape()
    finally:
        worker.stop()

    # (what, measured, truth); a truth read during a scrape is the interval the scrape spanned
    rows: list[tuple[str, float, float | tuple[float, float]]] = []
    saturation = ("sluice_worker_pool_saturation", (("pool", pool),))
    rows.append(("saturation, 3 of 4 slots busy", first[saturation], 3 / SLOTS))
    rows.append(("saturation, 4 of 4 slots busy", second[saturation], 1.0))
    for level in ("low", "high"):
        queue = physical_queue(level, broker.url)
        oldest = min(t for t, lv in published.values() if lv == level)
        key = ("sluice_queue_oldest_message_age_seconds", (("priority", level), ("queue", queue)))
        rows.append(
            (f"oldest waiting {queue}/{level} (s)", second[key], (before - oldest, after - oldest))
        )
    start_ms = started()
    # The waits of the backlog (seconds each); the long tasks started at once, where the test's
    # own publish overhead would dominate a 5% comparison, so only their count is compared.
    for level in ("normal", "low", "high"):
        queue = physical_queue(level, broker.url)
        waits = [start_ms[i] / 1000 - t for i, (t, lv) in published.items() if lv == level]
        labels = (("priority", level), ("queue", queue))
        rows.append(
            (f"wait count {queue}/{level}", third[("sluice_queue_wait_seconds_count", labels)], len(waits))
        )  # fmt: skip
        if level != "normal":
            measured = third[("sluice_queue_wait_seconds_sum", labels)]
            rows.append((f"wait sum {queue}/{level} (s)", measured, sum(waits)))
    with capsys.disabled():
        print(f"\ntelemetry vs ground truth [{broker.kind}]")
        for name, measured, truth in rows:
            print(f"  {name:<40} measured {measured:9.3f}  truth {shown(truth)}")
    for name, measured, truth in rows:
        assert close(measured, truth), (name, measured, truth)
    # nothing waits any more, and no label carries a task id or a host name
    for (name, labels), value in third.items():
        if name == "sluice_queue_oldest_message_age_seconds":
            assert value == 0, (labels, value)
        for _, label in labels:
            assert label not in published and "@" not in label
