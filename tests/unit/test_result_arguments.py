"""Extended results keep a task's arguments only while they are small (:class:`CompactArguments`).

A chunk of source files stored with every state it passed through (STARTED, then SUCCESS) doubled
the chunk's traffic; its name, worker, queue and retries are what a result needs to say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from hypothesis import given
from hypothesis import strategies as st

from sluice.workers.backend import RESULT_ARGUMENTS_LIMIT, arguments_fit, result_backend_url

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=60,
)


@given(JSON)
def test_arguments_whose_json_fits_the_limit_are_kept(value: Any) -> None:
    limit = len(json.dumps(value, ensure_ascii=False))
    assert arguments_fit(value, limit)


@given(JSON, st.integers(0, 2000))
def test_arguments_holding_more_text_than_the_limit_are_not(value: Any, limit: int) -> None:
    def text(node: Any) -> int:
        if isinstance(node, str):
            return len(node)
        if isinstance(node, dict):
            return sum(len(k) + text(v) for k, v in node.items())
        if isinstance(node, list):
            return sum(text(item) for item in node)
        return 0

    if text(value) > limit:
        assert not arguments_fit(value, limit)


def test_a_deep_or_long_value_is_judged_without_walking_all_of_it() -> None:
    huge = ["x" * RESULT_ARGUMENTS_LIMIT] + [{"n": i} for i in range(1_000_000)]
    assert not arguments_fit(huge)  # the first item is over: the million others are never seen


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    url = result_backend_url(f"db+sqlite:///{tmp_path / 'results.db'}")
    app = Celery("compact", backend=url, broker="memory://", set_as_current=False)
    app.conf.result_extended = True
    return app


def _request(args: list[Any], kwargs: dict[str, Any] | None = None) -> Context:
    return Context(
        id="t1", task="sluice.run_batch", args=args, kwargs=kwargs or {}, hostname="w1@h",
        retries=2, delivery_info={"routing_key": "high"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["analysis", [[0, {"content": "x" * 300_000}]], {}], {}),  # a chunk of source
        ([], {"payload": {"text": "y" * (RESULT_ARGUMENTS_LIMIT + 1)}}),  # in the keyword args
        ([[{"i": i} for i in range(RESULT_ARGUMENTS_LIMIT)]], {}),  # many small items
    ],
    ids=["chunk", "kwargs", "many-items"],
)
@pytest.mark.parametrize("state", ["STARTED", "SUCCESS"])
def test_bulk_arguments_are_left_out_of_every_state(
    app: Celery, args: list[Any], kwargs: dict[str, Any], state: str
) -> None:
    app.backend.store_result("t1", {"ok": True}, state, request=_request(args, kwargs))
    meta = app.backend.get_task_meta("t1")

    assert meta["status"] == state and meta["args"] is None and meta["kwargs"] is None
    assert (meta["name"], meta["worker"], meta["retries"], meta["queue"]) == (
        "sluice.run_batch", "w1@h", 2, "high",
    )  # fmt: skip


def test_small_arguments_are_kept(app: Celery) -> None:
    app.backend.store_result("t1", 3, "SUCCESS", request=_request([{"id": 7}], {"n": 1}))
    meta = app.backend.get_task_meta("t1")

    assert meta["args"] == [{"id": 7}] and meta["kwargs"] == {"n": 1}


def test_other_backends_are_left_as_they_are() -> None:
    assert result_backend_url("rpc://") == "rpc://"
    assert result_backend_url("redis://h:6379/0").endswith(":RedisBackend+redis://h:6379/0")
    assert result_backend_url("db+postgresql://h/d").endswith(":DatabaseBackend+postgresql://h/d")
