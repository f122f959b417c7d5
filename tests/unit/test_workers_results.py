"""Results on their backends: forgetting one while the backend is unreachable (a Redis restart
mid-run), and waking a waiter on the embedded (SQLite) backend."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from celery.result import AsyncResult

from sluice.workers.results import ResultBell, forget_quietly

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


#: Far longer than any wake-up takes: a waiter that sleeps it out has not been woken.
LONG = 60.0


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_result_stored_in_sqlite_wakes_the_waiter(tmp_path: Path, journal: str) -> None:
    """The embedded result backend: the bell watches the database's files, so a result stored by
    another process wakes the wait instead of the wait's timeout."""
    database = tmp_path / "results.db"
    app = Celery(
        "bell", backend=f"db+sqlite:///{database}", broker="memory://", set_as_current=False
    )
    app.backend.store_result("warm-up", 0, "SUCCESS")  # the tables exist
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA journal_mode={journal}")
    result = AsyncResult(uuid.uuid4().hex, app=app)
    script = (
        "import sys, time; from celery import Celery; time.sleep(0.3); "
        f"Celery('w', backend='db+sqlite:///{database}', broker='memory://')"
        f".backend.store_result('{result.id}', 1, 'SUCCESS')"
    )
    with ResultBell([result]) as bell:
        storing = subprocess.Popen([sys.executable, "-c", script])
        started = time.monotonic()
        bell.wait(LONG)
        woke_after = time.monotonic() - started
        assert storing.wait(30) == 0
    assert woke_after < LONG / 2, "the waiter slept out its timeout"
    assert result.get(timeout=5) == 1


def test_a_bell_on_sqlite_without_news_sleeps_its_timeout(tmp_path: Path) -> None:
    app = Celery(
        "bell",
        backend=f"db+sqlite:///{tmp_path / 'r.db'}",
        broker="memory://",
        set_as_current=False,
    )
    app.backend.store_result("warm-up", 0, "SUCCESS")
    with ResultBell([AsyncResult("never", app=app)]) as bell:
        started = time.monotonic()
        bell.wait(0.2)
        assert time.monotonic() - started >= 0.2  # nothing written: no early wake
