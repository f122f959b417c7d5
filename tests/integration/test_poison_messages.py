"""Poison messages on a real Redis broker, a real ``celery -A sluice worker`` and PostgreSQL.

Messages are published raw, as anyone with write access to the broker could, bypassing
``submit_task``'s checks: each one the worker cannot carry must be dead-lettered (raw), the worker
must stay up, and an ordinary task queued behind them must complete.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from sluice.workers.deadletter import DeadLetterQueue
from sluice.workers.payload import storable_text
from sluice.workers.poison import UNUSABLE
from tests.conftest import WorkerProcess, run_sluice, service_env
from tests.worker_fixtures import wait_for

pytestmark = pytest.mark.integration

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _body(payload_json: str) -> str:
    """A Celery protocol-2 body for a handler task ``sluice.handlers.<name>(payload)``, as text."""
    return f"[[{payload_json}], {{}}, {json.dumps(EMBED)}]"


def _publish(
    broker_url: str,
    body: str | bytes,
    task: str | None = "sluice.handlers.t_record",
    content_type: str = "application/json",
) -> str:
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        **({"task": task} if task else {}),
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "(...)",
        "kwargsrepr": "{}",
        "origin": "attacker",
    }
    queue = Queue("normal", Exchange("normal", type="direct"), routing_key="normal")
    with Connection(broker_url) as connection:
        connection.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key="normal",
            declare=[queue],
            headers=headers,
            content_type=content_type,
            content_encoding="binary" if "python" in content_type else "utf-8",
            serializer=None,
            priority=5,
            correlation_id=task_id,
        )
    return task_id


@pytest.fixture
def env(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> Iterator[dict[str, str]]:
    env = service_env(
        tmp_path,
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
        SLUICE_REDIS_URL=redis_url,
        SLUICE_KEY_PREFIX=key_prefix,
        SLUICE_DATABASE_URL=pg_schema,
        SLUICE_HANDLER_MODULES="tests.worker_handlers",
    )
    upgraded = run_sluice("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    yield env


def _dead_letters(pg_schema: str) -> dict[str, dict[str, Any]]:
    return {entry["task_id"]: entry for entry in DeadLetterQueue(pg_schema).list(limit=100)}


def test_poison_messages_are_dead_lettered_raw_and_the_worker_keeps_serving(
    tmp_path: Path, env: dict[str, str], redis_broker_url: str, pg_schema: str
) -> None:
    poison = {
        # decodes, but the pool's pickling of it would exceed the recursion limit
        "pickling": _body(_nested(600)),
        # does not decode at all
        "decoding": _body(_nested(10_000)),
        "not JSON": b"\xff{[not json",
        "truncated": _body(_nested(3))[:-5],
    }
    ids = {what: _publish(redis_broker_url, body) for what, body in poison.items()}
    # Refused content type (pickle: never loaded), and a JSON body with no task header.
    poison["pickle"] = pickle.dumps([[{"id": "pickled"}], {}, EMBED])
    ids["pickle"] = _publish(
        redis_broker_url, poison["pickle"], content_type="application/x-python-serialize"
    )
    poison["no task"] = '{"hello": "world"}'
    ids["no task"] = _publish(redis_broker_url, poison["no task"], task=None)
    # PostgreSQL's JSON has no NaN: the failing task's dead letter must still be written, once.
    nan_id = _publish(
        redis_broker_url, _body('{"id": "nan", "x": NaN}'), task="sluice.handlers.t_poison"
    )
    after_id = _publish(redis_broker_url, _body('{"id": "after", "label": "after"}'))

    worker = WorkerProcess(env, tmp_path / "worker.log", queues="normal", concurrency=1)
    client = Celery(broker=redis_broker_url, backend=redis_broker_url, set_as_current=False)
    try:
        worker.wait_ready()
        result = client.AsyncResult(after_id).get(timeout=90)
        assert result == {"id": "after", "label": "after"}
        entries = wait_for(
            lambda: (found := _dead_letters(pg_schema)).keys() >= {*ids.values(), nan_id} and found,
            timeout=60,
            what="every poison message in the dead-letter table",
        )
        assert worker.process.poll() is None, "the worker died"
    finally:
        client.close()
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "RecursionError" not in log and "Unrecoverable error" not in log
    for what, task_id in ids.items():
        entry = entries[task_id]
        assert entry["error"].startswith(UNUSABLE), what
        raw = poison[what]
        raw_text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        # kept whole for inspection (NUL escaped: a database text refuses it)
        assert entry["payload"]["raw_body"] == storable_text(raw_text), what
    nan_entry = entries[nan_id]
    assert nan_entry["task_name"] == "t_poison" and nan_entry["payload"] == {
        "id": "nan",
        "x": "NaN",
    }
    assert len(DeadLetterQueue(pg_schema).list(limit=100, task_name="t_poison")) == 1


HOSTILE_VALUES = [
    float("nan"),
    float("inf"),
    -float("inf"),
    "nul \x00 inside",
    "lone \ud800 surrogate",
    10**5000,
    2**70,
    object(),
    {1: "int key", None: "none key", (1, 2): "tuple key"},
    [[[[[[]]]]]],
]


def test_dead_letter_insert_never_fails_on_postgresql(pg_schema: str) -> None:
    """Whatever killed a task must not also kill its dead letter (NaN looped forever before)."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(1000):
        node["a"] = {}
        node = node["a"]
    queue = DeadLetterQueue(pg_schema)
    queue.ensure_schema()
    for value in HOSTILE_VALUES:
        entry = queue.add(
            task_id="id\x00",
            task_name="t\x00",
            payload={"value": value, "deep": deep},
            error="ValueError: hostile \x00 \ud800",
            traceback="tb \x00 \ud800",
            history=[{"attempt": 1, "value": value}],
        )
        stored = queue.get(entry)
        assert "value" in stored["payload"] and stored["history"][0]["attempt"] == 1
        json.dumps(stored["payload"], allow_nan=False)  # what was stored is strict JSON
    assert queue.get(entry)["payload"]["value"] == [[[[[[]]]]]]


def test_entries_that_are_no_message_are_dead_lettered_raw_and_the_worker_keeps_serving(
    tmp_path: Path, env: dict[str, str], redis_broker_url: str, pg_schema: str
) -> None:
    """Raw entries pushed onto a queue's list (not kombu envelopes at all) reach no handler, but
    neither stop the worker nor vanish: each is dead-lettered with its raw text."""
    import redis

    junk = [
        b"garbage",
        b"\xff\xfe not utf-8",
        b'{"body": "no properties"}',
        b"[1, 2]",
        b'{"properties": {"delivery_tag": "t1"}, "body": "e30="}',
        b'{"properties": {"delivery_tag": 7, "delivery_info": {}}, "body": ""}',
    ]
    first_id = _publish(redis_broker_url, _body('{"id": "first", "label": "first"}'))
    client = redis.Redis.from_url(redis_broker_url)
    for entry in junk:
        client.lpush("normal", entry)
    after_id = _publish(redis_broker_url, _body('{"id": "after", "label": "after"}'))
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="normal", concurrency=1)
    app = Celery(broker=redis_broker_url, backend=redis_broker_url, set_as_current=False)
    try:
        worker.wait_ready()
        assert app.AsyncResult(first_id).get(timeout=90) == {"id": "first", "label": "first"}
        assert app.AsyncResult(after_id).get(timeout=90) == {"id": "after", "label": "after"}
        entries = wait_for(
            lambda: len(found := DeadLetterQueue(pg_schema).list(limit=100)) >= len(junk) and found,
            timeout=60,
            what="every raw entry in the dead-letter table",
        )
        assert worker.process.poll() is None, "the worker died"
    finally:
        app.close()
        worker.stop()
        client.close()
    raw = sorted(entry["payload"]["raw_body"] for entry in entries)
    expected = sorted(storable_text(e.decode("utf-8", "backslashreplace")) for e in junk)
    assert raw == expected
    assert all(entry["error"].startswith(UNUSABLE) for entry in entries)
