"""Waiting for results on Redis: woken by the backend's publication, never relying on it.

A waiter hears a result the moment Celery's Redis backend publishes it (no read spent on an interval
in which nothing finished); a result stored before anyone listened (a task redelivered after its
worker died) is still found, by the read that follows every wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult, EagerResult

from sluice.celery import app
from sluice.workers.results import ResultBell, wait_ready
from tests.worker_fixtures import settings_env

pytestmark = pytest.mark.integration

#: Far longer than any wake-up takes: a waiter that sleeps it out has not been woken.
LONG = 60.0


@pytest.fixture
def redis_results(redis_broker_url: str) -> Iterator[None]:
    with settings_env(
        reconfigure_celery=True,
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
    ):
        yield


def _store_later(task_id: str, delay: float = 0.2) -> threading.Thread:
    def store() -> None:
        time.sleep(delay)
        app.backend.store_result(task_id, {"done": task_id}, "SUCCESS")

    thread = threading.Thread(target=store)
    thread.start()
    return thread


@pytest.mark.parametrize("watched", [1, 5])
def test_a_stored_result_wakes_the_waiter(redis_results: None, watched: int) -> None:
    results = [AsyncResult(uuid.uuid4().hex, app=app) for _ in range(watched)]
    with ResultBell(results) as bell:
        storing = _store_later(results[-1].id)
        started = time.monotonic()
        bell.wait(LONG)
        woke_after = time.monotonic() - started
        storing.join()
    assert woke_after < LONG / 2, "the waiter slept out its timeout"
    assert results[-1].ready()


def test_a_result_watched_later_wakes_the_waiter(redis_results: None) -> None:
    first, retried = (AsyncResult(uuid.uuid4().hex, app=app) for _ in range(2))
    with ResultBell([first]) as bell:
        bell.watch([retried])  # an item retried alone joins the wait
        storing = _store_later(retried.id)
        started = time.monotonic()
        bell.wait(LONG)
        storing.join()
    assert time.monotonic() - started < LONG / 2


def test_a_result_stored_before_anyone_listened_is_still_found(redis_results: None) -> None:
    early = AsyncResult(uuid.uuid4().hex, app=app)
    app.backend.store_result(early.id, 1, "SUCCESS")  # published to nobody
    started = time.monotonic()
    wait_ready([early], LONG, "a result stored early")
    assert time.monotonic() - started < LONG / 2 and early.get(timeout=1) == 1


def test_wait_ready_returns_when_the_last_result_is_stored(redis_results: None) -> None:
    results = [AsyncResult(uuid.uuid4().hex, app=app) for _ in range(3)]
    for result in results[:2]:
        app.backend.store_result(result.id, 0, "SUCCESS")
    storing = _store_later(results[2].id, delay=0.5)
    wait_ready(results, LONG, "three results")
    storing.join()
    assert all(result.ready() for result in results)


def test_a_closed_bell_or_inline_results_just_sleep(redis_results: None) -> None:
    pending = AsyncResult(uuid.uuid4().hex, app=app)
    bell = ResultBell([pending])
    bell.close()
    storing = _store_later(pending.id, delay=0.0)
    storing.join()
    started = time.monotonic()
    bell.wait(0.3)  # nobody listens any more: the full pause
    assert time.monotonic() - started >= 0.3
    with ResultBell([EagerResult("x", 1, "SUCCESS")]) as inline:
        started = time.monotonic()
        inline.wait(0.3)
        assert time.monotonic() - started >= 0.3


def test_a_bell_on_an_unreachable_backend_falls_back_to_sleeping(redis_results: None) -> None:
    with settings_env(reconfigure_celery=True, SLUICE_RESULT_BACKEND="redis://127.0.0.1:1/0"):
        pending = AsyncResult(uuid.uuid4().hex, app=app)
        with ResultBell([pending]) as bell:
            started = time.monotonic()
            bell.wait(0.3)
            assert time.monotonic() - started >= 0.3


def test_a_waiter_whose_results_are_in_opens_no_connection(
    redis_results: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    client = app.backend.client
    pubsub = client.pubsub
    monkeypatch.setattr(client, "pubsub", lambda **kw: opened.append(1) or pubsub(**kw))
    done = AsyncResult(uuid.uuid4().hex, app=app)
    app.backend.store_result(done.id, 1, "SUCCESS")
    wait_ready([done], LONG, "a result already in")
    assert opened == []  # read once, never waited
    later = AsyncResult(uuid.uuid4().hex, app=app)
    storing = _store_later(later.id)
    wait_ready([later], LONG, "a result stored later")
    storing.join()
    assert opened == [1]
