"""Queue declarations per broker, priority routing on RabbitMQ, and an unreachable broker at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice.errors import BackendUnavailable
from sluice.workers import Priority, route
from sluice.workers.brokers import (
    AMQP_PRIORITY_QUEUE,
    broker_queues,
    check_broker_reachable,
    declared_queues,
    physical_queue,
)
from sluice.workers.priority import PRIORITY_QUEUES
from tests.conftest import ROOT, service_env
from tests.worker_fixtures import settings_env

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("url", [AMQP, "amqps://u:p@h:5671/v", "pyamqp://h//"])
def test_rabbitmq_gets_one_durable_classic_priority_queue_for_the_four_levels(url: str) -> None:
    queues = {q.name: q for q in declared_queues(url)}
    assert set(queues) == {AMQP_PRIORITY_QUEUE, "batch"}
    for queue in queues.values():
        assert queue.durable and not queue.auto_delete and not queue.exclusive
        assert queue.queue_arguments == {"x-max-priority": 10, "x-queue-type": "classic"}
    assert {physical_queue(level, url) for level in PRIORITY_QUEUES} == {AMQP_PRIORITY_QUEUE}
    assert broker_queues(url) == (AMQP_PRIORITY_QUEUE, "batch")


@pytest.mark.parametrize("url", [REDIS, "rediss://h:6380/0", "filesystem://"])
def test_other_brokers_keep_one_queue_per_level(url: str) -> None:
    assert [q.name for q in declared_queues(url)] == ["critical", "high", "normal", "low", "batch"]
    assert all(physical_queue(level, url) == level for level in PRIORITY_QUEUES)


@pytest.mark.parametrize("level", list(Priority))
def test_route_on_rabbitmq_orders_by_message_priority(level: Priority) -> None:
    with settings_env(SLUICE_BROKER_URL=AMQP):
        options = route(level)
    expected_queue = "batch" if level is Priority.BATCH else AMQP_PRIORITY_QUEUE
    assert options == {"queue": expected_queue, "priority": int(level)}


def test_an_unreachable_broker_is_named_without_its_password() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        check_broker_reachable("amqp://guest:s3cret@127.0.0.1:1//", timeout=2)
    message = str(caught.value)
    assert "amqp://guest:***@127.0.0.1:1//" in message and "s3cret" not in message


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "celery", "-A", "sluice", "worker", "-l", "INFO"],
        ["-m", "sluice.cli", "analyze", str(ROOT / "examples/app"), "--workers", "0"],
    ],
    ids=["worker", "analyze"],
)
def test_start_up_with_an_unreachable_amqp_url_fails_with_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = service_env(tmp_path, SLUICE_BROKER_URL="amqp://guest:s3cret@127.0.0.1:1//")
    done = subprocess.run(
        [sys.executable, *command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if "cannot reach the broker" in line]
    assert len(lines) == 1, output
    assert "amqp://guest:***@127.0.0.1:1//" in lines[0] and "s3cret" not in output
