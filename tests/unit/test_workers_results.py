"""Forgetting a read result while the result backend is unreachable (a Redis restart mid-run)."""

from __future__ import annotations

import pytest
from celery import Celery
from celery.result import AsyncResult

from sluice.workers.results import forget_quietly

# Nothing listens on port 1: every command fails the way it does while Redis restarts.
DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture
def down_app() -> Celery:
    return Celery("down", backend=DOWN, broker="memory://", set_as_current=False)


def test_celery_raises_when_forgetting_on_an_unreachable_backend(down_app: Celery) -> None:
    # The failure forget_quietly exists for: Celery retries reads, not this delete.
    with pytest.raises(Exception, match=r"(?i)connect"):
        AsyncResult("read-already", app=down_app).forget()


def test_forget_quietly_leaves_the_result_to_expire(
    down_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="sluice.workers.results"):
        forget_quietly(AsyncResult("read-already", app=down_app))
    assert "read-already not forgotten now" in caplog.text
