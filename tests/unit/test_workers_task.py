"""SluiceTask without services: handlers as named tasks, plain tasks' routing, retries, dead letters,
RetryLater, the running priority, and bad input refused at submit time."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chord, group

import tests.worker_handlers as handlers
from sluice.celery import app
from sluice.errors import ConfigurationError, InvalidInput, RetryLater
from sluice.store import get_store
from sluice.taskcontext import current_priority
from sluice.workers import (
    AsyncTaskQueue,
    DeadLetterQueue,
    Priority,
    TaskHandler,
    define_rate_limit,
    registry,
    sluice_task,
    submit_batch,
    submit_task,
)
from sluice.workers import stats as worker_stats
from sluice.workers.handlers import load_handler_modules
from tests.worker_fixtures import settings_env


def _depths() -> dict[str, int]:
    return worker_stats.queue_depths(app)


def _totals() -> dict[str, int]:
    return worker_stats.counters().totals()[0]


# -- one task per handler ----------------------------------------------------------------------


def test_every_handler_is_its_own_celery_task() -> None:
    for name in ("t_record", "t_poison", "t_chunk", "t_micro", "t_limited"):
        task = app.tasks[f"sluice.handlers.{name}"]
        assert task.label == name
        assert task.max_retries == registry.get(name).max_retries
        assert task.level == registry.get(name).priority

    class Late(TaskHandler):
        priority = Priority.CRITICAL
        max_retries = 7

        @property
        def task_name(self) -> str:
            return "t_registered_late"

        def execute(self, payload: dict[str, Any]) -> Any:
            return payload

    AsyncTaskQueue().register_handler(Late())
    task = app.tasks["sluice.handlers.t_registered_late"]
    assert task.level is Priority.CRITICAL and task.max_retries == 7


def test_a_handler_module_that_fails_to_import_names_its_error(tmp_path: Path) -> None:
    module = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "raise RuntimeError('cannot reach the model registry')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigurationError, match=rf"{module}.*cannot reach the model registry"):
            load_handler_modules([module])
        with pytest.raises(ConfigurationError, match="no_such_module_here"):
            load_handler_modules(["no_such_module_here"])
    finally:
        sys.path.remove(str(tmp_path))


# -- bad input at submit time ------------------------------------------------------------------

BAD_CALLS = {
    "unknown handler": (lambda: submit_task("nope_handler", {"id": 1}), "'nope_handler'"),
    "unknown handler, queue": (
        lambda: asyncio.run(AsyncTaskQueue().submit("nope_handler", {})),
        "'nope_handler'",
    ),
    "unknown handler, batch": (lambda: submit_batch("nope_handler", [{}]), "'nope_handler'"),
    "handler payload not JSON": (lambda: submit_task("t_record", {"x": object()}), "JSON"),
    "plain args not JSON": (lambda: handlers.limited_call.delay({1, 2}), "JSON"),
    "plain kwargs not JSON": (
        lambda: handlers.limited_call.apply_async(("k",), {"fail": b"bytes"}),
        "JSON",
    ),
    "priority out of range": (lambda: submit_task("t_record", {}, priority=11), "11"),
    "priority name": (
        lambda: handlers.limited_call.apply_async(("k",), priority="urgent"),
        "urgent",
    ),
    "priority of a batch": (lambda: submit_batch("t_chunk", [{"id": 1}], 4), "4"),
    "countdown": (lambda: handlers.limited_call.apply_async(("k",), countdown=-3), "-3"),
    "unknown rate limit, handler": (
        lambda: submit_task("t_limited", {"id": 1}),
        "rate limit 't' is not defined",
    ),
    "unknown rate limit, plain": (
        lambda: handlers.limited_call.delay("k"),
        "rate limit 't' is not defined",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_is_refused_at_submit_and_nothing_is_queued(data_dir: Path, case: str) -> None:
    call, named = BAD_CALLS[case]
    before = _depths()
    with pytest.raises(InvalidInput, match=named):
        call()
    assert _depths() == before
    assert _totals()["all:submitted"] == 0


def test_unknown_rate_limit_name_in_the_decorator_is_refused() -> None:
    with pytest.raises(InvalidInput, match="rate_limit"):
        sluice_task(rate_limit="")
    with pytest.raises(InvalidInput, match="unknown priority"):
        sluice_task(priority=12)


# -- plain tasks: routing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "queue"),
    [
        (lambda: handlers.limited_call.delay("a"), "high"),
        (lambda: handlers.limited_call.apply_async(("a",), priority=Priority.CRITICAL), "critical"),
        (lambda: handlers.limited_call.apply_async(("a",), priority="low"), "low"),
        (lambda: handlers.limited_call.s("a").apply_async(), "high"),
        (lambda: handlers.later.delay("a"), "normal"),
        (lambda: submit_task("t_record", {"id": 1}, "batch"), "batch"),
        (lambda: submit_task("t_poison", {"id": 1}), "normal"),
    ],
)
def test_plain_tasks_land_on_the_queue_of_their_priority(
    data_dir: Path, call: Any, queue: str
) -> None:
    define_rate_limit("t", 100)
    before = _depths()
    call()
    after = _depths()
    assert {q: after[q] - before[q] for q in after if after[q] != before[q]} == {queue: 1}
    assert _totals()[f"queue:{queue}:submitted"] == 1


# -- plain tasks: execution (inline) -----------------------------------------------------------


def test_plain_task_runs_inline_with_its_priority_set(sync_mode: DeadLetterQueue) -> None:
    define_rate_limit("t", 1000, 10)
    assert handlers.limited_call.delay("p1").get()["priority"] == int(Priority.HIGH)
    critical = handlers.limited_call.apply_async(("p2",), priority=Priority.CRITICAL)
    assert critical.get()["priority"] == int(Priority.CRITICAL)
    assert current_priority.get() == int(Priority.NORMAL)  # reset after the body
    assert handlers.limited_call("direct")["key"] == "direct"  # a plain call stays a plain call


def test_plain_task_retries_then_dead_letters_then_replays(sync_mode: DeadLetterQueue) -> None:
    define_rate_limit("t", 1000, 10)
    store = get_store()
    result = handlers.limited_call.apply_async(("bad",), {"fail": True}, priority="critical")
    assert result.failed() and "dead-letter entry" in str(result.result)
    assert store.hgetall_counters("attempts") == {"bad": 3}  # max_retries=2
    (entry,) = sync_mode.list()
    assert entry["task_name"] == "tests.limited_call"
    assert entry["payload"] == {"args": ["bad"], "kwargs": {"fail": True}}
    assert entry["queue"] == "critical" and entry["attempts"] == 3
    assert [h["attempt"] for h in entry["history"]] == [1, 2, 3]
    stats = AsyncTaskQueue().get_stats()
    assert stats["retries"] == 2 and stats["dead_lettered"] == 1

    store.set(handlers.FIXED_FLAG, True)
    sync_mode.replay(entry["id"])
    assert store.hgetall_counters("attempts") == {"bad": 4}
    assert store.hgetall_counters("runs") == {"bad": 1}
    assert sync_mode.list(pending_only=True) == []


def test_retry_later_is_not_an_attempt_and_never_a_dead_letter(sync_mode: DeadLetterQueue) -> None:
    result = handlers.later.delay("w")
    assert result.get() == 3
    stats = AsyncTaskQueue().get_stats()
    assert stats["retries"] == 0 and stats["failed"] == 0 and stats["completed"] == 1
    assert sync_mode.count() == 0


def test_retry_later_from_a_handler(sync_mode: DeadLetterQueue) -> None:
    calls = {"n": 0}

    class Admission(TaskHandler):
        max_retries = 0

        @property
        def task_name(self) -> str:
            return "t_admission"

        def execute(self, payload: dict[str, Any]) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RetryLater(0.01, "provider budget window")
            return {"ran": calls["n"], "priority": current_priority.get()}

    registry.register(Admission())
    handle = submit_task("t_admission", {}, Priority.LOW)
    assert handle.get() == {"ran": 2, "priority": int(Priority.LOW)}
    assert sync_mode.count() == 0


def test_groups_and_chords_of_plain_tasks_inline(tmp_path: Path) -> None:
    """A process started with async processing off runs Celery's canvas inline too."""
    with settings_env(
        reconfigure_celery=True,
        SLUICE_DATA_DIR=str(tmp_path / "data"),
        ASYNC_PROCESSING_ENABLED="false",
    ):
        assert app.conf.task_always_eager is True
        _canvas()


def _canvas() -> None:
    define_rate_limit("t", 1000, 100)
    assert [
        r["key"] for r in group(handlers.limited_call.s(f"g{i}") for i in range(3))().get()
    ] == [
        "g0",
        "g1",
        "g2",
    ]
    assert chord(handlers.limited_call.s(f"c{i}") for i in range(4))(handlers.total.s()).get() == 4


# -- what a message shows of its arguments -----------------------------------------------------


@pytest.fixture
def published_headers() -> Iterator[list[dict[str, Any]]]:
    from celery.signals import before_task_publish

    seen: list[dict[str, Any]] = []

    def keep(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(dict(headers or {}))

    before_task_publish.connect(keep, weak=False)
    try:
        yield seen
    finally:
        before_task_publish.disconnect(keep)


@pytest.mark.parametrize(
    "payload",
    [{"id": 1}, {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}}, {}],
)
def test_a_handler_message_shows_its_payload_as_the_json_validated_at_submit(
    data_dir: Path, published_headers: list[dict[str, Any]], payload: dict[str, Any]
) -> None:
    import json

    submit_task("t_poison", payload)
    (headers,) = published_headers
    assert json.loads(headers["argsrepr"]) == [payload]


def test_a_long_payload_is_shown_cut_like_celery_cuts_it(
    data_dir: Path, published_headers: list[dict[str, Any]]
) -> None:
    submit_task("t_poison", {"text": "x" * 5000})
    (headers,) = published_headers
    assert len(headers["argsrepr"]) == app.amqp.argsrepr_maxsize
    assert headers["argsrepr"].startswith('[{"text":"xxx')


def test_a_plain_task_message_keeps_celerys_own_argument_display(
    data_dir: Path, published_headers: list[dict[str, Any]]
) -> None:
    define_rate_limit("t", 100)
    handlers.limited_call.delay("a")
    (headers,) = published_headers
    assert headers["argsrepr"] == "('a',)"


@pytest.mark.parametrize("submit", ["chunks", "batch"])
def test_a_chunk_message_shows_which_items_it_carries_not_their_text(
    data_dir: Path, published_headers: list[dict[str, Any]], submit: str
) -> None:
    from sluice.workers import submit_chunks

    payloads = [{"text": f"{i}:" + "x" * 3000} for i in range(5)]
    if submit == "chunks":
        submit_chunks("embedding", payloads, weights=[3000] * 5, budget=6000)
    else:
        submit_batch("embedding", payloads)
    shown = [h["argsrepr"] for h in published_headers if h["task"] == "sluice.run_batch"]

    expected = ["<2 items: 0..1>", "<2 items: 2..3>", "<1 items: 4..4>"]
    assert len(shown) == (3 if submit == "chunks" else 1)
    for text, items in zip(
        shown, expected if submit == "chunks" else ["<5 items: 0..4>"], strict=True
    ):
        assert text.startswith("('embedding', " + items) and "xxx" not in text
