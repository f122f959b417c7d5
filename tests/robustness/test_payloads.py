"""Payload fuzzing: ``check_payload`` and ``submit_task`` (inline mode) on hostile values.

Contract: refused with :class:`InvalidInput` at the door, or carried unchanged to the handler and
answered; never another exception, a hang, or a task that vanishes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from kombu.serialization import dumps

from sluice.errors import InvalidInput, TaskFailed
from sluice.workers import DeadLetterQueue, TaskHandler, registry, submit_task
from sluice.workers.payload import MAX_DEPTH, fits, storable
from sluice.workers.submit import check_payload, handler_task
from tests.robustness.contract import EXAMPLES, keeps_contract
from tests.robustness.strategies import nested, payloads, plain
from tests.worker_fixtures import settings_env

ECHO = "robustness_echo"


class EchoHandler(TaskHandler):
    """Returns its payload: what arrives is what was sent."""

    max_retries = 0

    @property
    def task_name(self) -> str:
        return ECHO

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


@given(payload=payloads)
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_check_payload_refuses_or_accepts_what_every_hop_carries_unchanged(payload: Any) -> None:
    outcome = keeps_contract(lambda: check_payload(payload))
    event("refused" if outcome.error else "accepted")
    if outcome.error is not None:
        assert isinstance(outcome.error, InvalidInput)
        return
    text = json.dumps(payload, allow_nan=False)  # strict JSON: no NaN, no infinity
    assert json.loads(text) == plain(payload)  # no key merged, nothing changed
    assert fits(payload, MAX_DEPTH)
    dumps(["name", payload, {}], serializer="json")  # and the broker's encoder takes it


@pytest.mark.parametrize(
    "payload",
    [
        nested(10_000),
        nested(MAX_DEPTH + 1),
        {1: "a", "1": "b"},
        {None: "a", "null": "b"},
        {True: 1},
        {"x": float("nan")},
        {"x": [1, {"y": float("-inf")}]},
        {"x": "\ud800"},
        {"x": b"bytes"},
        {"x": 10**5000},
    ],
    ids=[
        "10000-levels",
        "one-level-too-deep",
        "int-and-str-key",
        "none-and-null-key",
        "bool-key",
        "nan",
        "nested-inf",
        "lone-surrogate",
        "bytes",
        "huge-int",
    ],
)
def test_each_reported_payload_is_invalid_input(payload: dict[Any, Any]) -> None:
    with pytest.raises(InvalidInput):
        check_payload(payload)


def test_the_deepest_accepted_payload_is_accepted() -> None:
    check_payload(nested(MAX_DEPTH))


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeadLetterQueue]:
    data = tmp_path_factory.mktemp("robustness") / "data"
    with settings_env(SLUICE_DATA_DIR=str(data), ASYNC_PROCESSING_ENABLED="false"):
        Path(data).mkdir(parents=True, exist_ok=True)
        if ECHO not in registry:
            registry.register(EchoHandler())
        dlq = DeadLetterQueue()
        dlq.ensure_schema()
        yield dlq


@given(payload=payloads)
@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_submit_task_inline_refuses_at_the_door_or_answers(
    inline: DeadLetterQueue, payload: Any
) -> None:
    dead_before = inline.count()
    outcome = keeps_contract(lambda: submit_task(ECHO, payload))
    event("refused" if outcome.error else "answered")
    if outcome.error is not None:
        assert isinstance(outcome.error, InvalidInput)
        assert inline.count() == dead_before  # refused at the door: nothing ran, nothing queued
        return
    result = outcome.value
    if result.successful():
        assert plain(result.result) == plain(payload)  # carried unchanged
    else:  # never silently lost: a failure is a dead letter
        assert isinstance(result.result, TaskFailed) and inline.count() == dead_before + 1


@pytest.mark.parametrize("headers", [{"x": object()}, {"x": float("nan")}, {1: 2}, "headers"])
def test_non_json_headers_are_invalid_input_not_a_kombu_error(tmp_path: Path, headers: Any) -> None:
    """A caller's own message headers travel with the task: they are checked like the payload."""
    with settings_env(SLUICE_DATA_DIR=str(tmp_path / "data")):
        if ECHO not in registry:
            registry.register(EchoHandler())
        with pytest.raises(InvalidInput, match="headers"):
            handler_task(ECHO).apply_async(({"id": 1},), headers=headers)


@given(value=payloads)
@settings(max_examples=EXAMPLES, deadline=None)
def test_anything_can_be_stored_as_a_dead_letter(value: Any) -> None:
    """The dead-letter representation never fails: strict JSON, no NUL, valid UTF-8."""
    stored = keeps_contract(lambda: storable(value)).value
    text = json.dumps(stored, allow_nan=False, ensure_ascii=False)
    assert "\x00" not in text
    text.encode("utf-8")
