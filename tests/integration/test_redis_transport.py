"""sluice's Redis transport on a real Redis: a message is always either queued or restorable.

kombu's own transport takes a message with BRPOP and records it as unacknowledged only once the reply
is read, so a consumer that dies in between (SIGKILL, a broker dropping out) loses it. These tests
kill a real consumer process at exactly that point, on every way a message is taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Queue

from sluice.workers import redisbroker
from tests.broker_entries import ENTRIES, broken, nested
from tests.conftest import ROOT, service_env

pytestmark = pytest.mark.integration

QUEUE = "taken"

#: A consumer that sends its take and is SIGKILLed before it reads the reply.
_DIES_MID_TAKE = """
import os, signal, sys, time
from kombu import Connection, Exchange, Queue
from sluice.workers import redisbroker

url, how, prefix = sys.argv[1:]
queue = Queue("taken", Exchange("taken"), "taken", max_priority=9)
options = {"global_keyprefix": prefix} if prefix else {}
with Connection(url, transport=redisbroker.Transport, transport_options=options) as connection:
    channel = connection.default_channel
    if how == "get":
        # basic_get: the message comes back in the reply and the process dies holding it.
        message = queue(channel).get(no_ack=False)
        assert message is not None
    else:
        # The event loop's take: sent (as every poll of the worker's loop starts), never read.
        queue(channel).consume(callback=lambda message: None)
        connection.transport.cycle.on_poll_start()
        time.sleep(0.3)
    print("taken", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def client(redis_broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_broker_url)
    yield client
    client.close()


def _queue() -> Queue:
    return Queue(QUEUE, Exchange(QUEUE), QUEUE, max_priority=9)


def _publish(url: str, body: Any, priority: int = 0, **options: Any) -> None:
    with Connection(url, transport=redisbroker.Transport, transport_options=options) as connection:
        connection.Producer().publish(
            body, exchange=_queue().exchange, routing_key=QUEUE, declare=[_queue()],
            serializer="json", priority=priority,
        )  # fmt: skip


def _receive(url: str, expect: int, timeout: float = 10, **options: Any) -> list[Any]:
    """Take ``expect`` messages off ``taken``, acknowledging each; TimeoutError when one of them
    takes longer than ``timeout`` seconds to arrive."""
    received: list[Any] = []
    transport = options.pop("transport", redisbroker.Transport)
    with (
        Connection(url, transport=transport, transport_options=options) as connection,
        connection.Consumer(
            _queue(),
            accept=["json"],
            callbacks=[lambda body, message: (received.append(body), message.ack())],
        ),  # fmt: skip
    ):
        while len(received) < expect:
            connection.drain_events(timeout=timeout)
    return received


def _left(client: redis.Redis, prefix: str = "") -> int:
    """Messages still queued or unacknowledged."""
    lists = client.keys(f"{prefix}{QUEUE}*")
    return sum(client.llen(key) for key in lists) + client.hlen(f"{prefix}unacked")


@pytest.mark.parametrize("prefix", ["", "tenant-a:"])
@pytest.mark.parametrize("priority", [0, 9])
@pytest.mark.parametrize("how", ["event-loop", "get"])
def test_a_consumer_killed_mid_take_loses_nothing(
    tmp_path: Path,
    redis_broker_url: str,
    client: redis.Redis,
    how: str,
    priority: int,
    prefix: str,
) -> None:
    options = {"global_keyprefix": prefix} if prefix else {}
    body = {"file": "a.py", "how": how, "priority": priority}
    _publish(redis_broker_url, body, priority, **options)
    died = subprocess.run(
        [sys.executable, "-c", _DIES_MID_TAKE, redis_broker_url, how, prefix],
        env=service_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert died.returncode == -9 and died.stdout == "taken\n", died.stderr
    keys = {key.decode() for key in client.keys("*")}
    assert all(key.startswith(prefix) for key in keys), keys
    # Off its queue, and recorded as unacknowledged with what restoring it needs.
    assert not any(key.removeprefix(prefix).startswith(QUEUE) for key in keys), keys
    assert client.zcard(f"{prefix}unacked_index") == client.hlen(f"{prefix}unacked") == 1
    time.sleep(1.2)  # past the visibility timeout below
    with Connection(
        redis_broker_url,
        transport=redisbroker.Transport,
        transport_options={**options, "visibility_timeout": 1},
    ) as connection:
        connection.default_channel.qos.restore_visible(num=10, interval=1)
    assert _receive(redis_broker_url, 1, **options) == [body]
    assert _left(client, prefix) == 0


def test_messages_are_taken_in_kombus_priority_order(
    redis_broker_url: str, client: redis.Redis
) -> None:
    """The take script walks the lists in kombu's own order (priority steps, then queues)."""
    from kombu.transport.redis import Transport as KombuTransport

    order = (0, 3, 9, 6, 0, 9, 5, 1)
    taken = {}
    for transport in (KombuTransport, redisbroker.Transport):
        for priority in order:
            _publish(redis_broker_url, {"priority": priority}, priority)
        bodies = _receive(redis_broker_url, len(order), transport=transport)
        taken[transport] = [body["priority"] for body in bodies]
        assert _left(client) == 0
    assert taken[redisbroker.Transport] == taken[KombuTransport]
    assert sorted(taken[KombuTransport]) != list(order)  # the order was up to the transport


def test_an_idle_consumer_is_woken_by_a_publish_not_by_its_poll(
    redis_broker_url: str, client: redis.Redis
) -> None:
    """A consumer that found every list empty waits on the queue's bell: a publish wakes it
    although its fallback poll (``brpop_timeout``) is far longer than the drain timeout."""

    class SlowPoll(redisbroker.Transport):
        brpop_timeout = 60

    body = {"file": "late.py"}
    publisher = threading.Timer(1.0, _publish, (redis_broker_url, body))
    publisher.start()
    try:
        received = _receive(redis_broker_url, 1, transport=SlowPoll)
    finally:
        publisher.join()
    assert received == [body] and _left(client) == 0


def test_a_message_from_a_producer_that_does_not_ring_is_found_by_the_poll(
    redis_broker_url: str,
) -> None:
    """Another app publishing with kombu's own transport rings no bell: the idle consumer's
    fallback poll takes the message anyway."""
    body = {"file": "foreign.py"}

    def publish_with_kombu() -> None:
        with Connection(redis_broker_url) as connection:
            connection.Producer().publish(
                body, exchange=_queue().exchange, routing_key=QUEUE, declare=[_queue()],
                serializer="json",
            )  # fmt: skip

    publisher = threading.Timer(1.0, publish_with_kombu)
    publisher.start()
    try:
        received = _receive(redis_broker_url, 1)
    finally:
        publisher.join()
    assert received == [body]


def test_bells_keep_a_bounded_number_of_tokens(redis_broker_url: str, client: redis.Redis) -> None:
    for n in range(redisbroker.BELL_TOKENS + 10):
        _publish(redis_broker_url, {"n": n})
    assert client.llen(f"_sluice.bell.{QUEUE}") == redisbroker.BELL_TOKENS
    assert (
        len(_receive(redis_broker_url, redisbroker.BELL_TOKENS + 10))
        == redisbroker.BELL_TOKENS + 10
    )


def _valid_envelope(url: str, client: redis.Redis) -> dict[str, Any]:
    """A message as kombu lays it on the list, taken back off it."""
    _publish(url, {"file": "ok.py"})
    raw = client.rpop(QUEUE)
    assert raw is not None
    return dict(json.loads(raw))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    entry=ENTRIES,
    prefix=st.sampled_from(["", "tenant-a:"]),
)
def test_an_entry_that_is_no_message_is_handed_over_as_an_unreadable_one_and_kept(
    redis_broker_url: str, client: redis.Redis, entry: bytes | str, prefix: str
) -> None:
    """Whatever sits on a queue's list, a take hands it over as a message (the raw bytes under a
    content type no worker accepts: a Celery worker dead-letters it) recorded as unacknowledged
    like any other, so that a consumer that dies holding it has it restored."""
    client.flushdb()
    options = {"global_keyprefix": prefix} if prefix else {}
    if isinstance(entry, str):
        entry = broken(_valid_envelope(redis_broker_url, client), entry)
    _publish(redis_broker_url, {"file": "declare"}, **options)  # declares the queue and exchange
    client.delete(f"{prefix}{QUEUE}")
    client.lpush(f"{prefix}{QUEUE}", entry)
    with Connection(
        redis_broker_url,
        transport=redisbroker.Transport,
        transport_options={**options, "visibility_timeout": 0},
    ) as connection:
        channel = connection.default_channel
        for _ in range(2):  # taken, restored unacknowledged, taken again
            message = _queue()(channel).get(no_ack=False)
            assert message is not None
            assert message.content_type == "application/x-unreadable-entry"
            assert message.body == entry
            assert client.hlen(f"{prefix}unacked") == 1 and _left(client, prefix) == 1
            channel.qos.restore_visible(num=10)
            channel.qos._delivered.clear()  # this process "died" holding it
        assert _left(client, prefix) == 1


@pytest.mark.parametrize("depth", [990, 1200], ids=["python too shallow", "lua too shallow"])
def test_an_entry_nested_deeper_than_a_decoder_goes_is_handed_over_as_unreadable(
    redis_broker_url: str, client: redis.Redis, depth: int
) -> None:
    entry = nested(_valid_envelope(redis_broker_url, client), depth)
    client.lpush(QUEUE, entry)
    with Connection(redis_broker_url, transport=redisbroker.Transport) as connection:
        message = _queue()(connection.default_channel).get(no_ack=False)
        assert message is not None and message.body == entry
        assert message.content_type == "application/x-unreadable-entry"
        message.ack()
    assert _left(client) == 0
