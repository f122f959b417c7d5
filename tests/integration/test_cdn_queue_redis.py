"""The invalidation queue on Redis, shared by processes, and the beat tasks run as Celery tasks."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.cdn.invalidation import InvalidationQueue
from sluice.store import RedisStore
from tests.integration.test_cdn_providers import FakeAPI, reply

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, prefix=key_prefix)
    yield store
    store.close()


def _queue_from_child(redis_url: str, prefix: str, worker: int) -> None:
    store = RedisStore(redis_url, prefix=prefix)
    InvalidationQueue(store).queue([f"/shared/{i}.js" for i in range(50)] + [f"/own/{worker}.js"])
    store.close()


def test_processes_share_one_deduplicated_queue(
    store: RedisStore, redis_url: str, key_prefix: str
) -> None:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_queue_from_child, args=(redis_url, key_prefix, n)) for n in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    pending = InvalidationQueue(store).pending()
    assert len(pending) == len(set(pending)) == 53


def test_queue_survives_a_new_connection(
    store: RedisStore, redis_url: str, key_prefix: str
) -> None:
    InvalidationQueue(store).queue(["/a.js"])
    other = RedisStore(redis_url, prefix=key_prefix)
    assert InvalidationQueue(other).pending() == ["/a.js"]
    other.close()


@pytest.fixture
def task_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str
) -> Iterator[FakeAPI]:
    """The process-wide manager on Redis with a webhook provider; Celery tasks run eagerly."""
    from sluice.cdn import reset_cdn_manager
    from sluice.settings import get_settings
    from sluice.store import reset_store_cache

    def reset() -> None:
        get_settings.cache_clear()
        reset_store_cache()
        reset_cdn_manager()

    for api in FakeAPI(lambda request: reply(200, {"ok": True})).serve():
        monkeypatch.setenv("SLUICE_REDIS_URL", redis_url)
        monkeypatch.setenv("SLUICE_KEY_PREFIX", key_prefix)
        monkeypatch.setenv("SLUICE_CDN_PROVIDER", "webhook")
        monkeypatch.setenv("SLUICE_CDN_WEBHOOK_URL", f"{api.url}/purge")
        monkeypatch.setenv("SLUICE_CDN_BACKOFF_BASE", "0.01")
        monkeypatch.setenv("SLUICE_CDN_MAX_RETRIES", "0")
        static = tmp_path / "static"
        static.mkdir()
        (static / "app.js").write_text("let x = 1;\n" * 500)
        monkeypatch.setenv("SLUICE_CDN_STATIC_ROOT", str(static))
        log = tmp_path / "edge.log"
        log.write_text(
            't 127.0.0.1 "GET / HTTP/1.1" 200 1 rt=0 enc=- cache=HIT\n' * 3
            + 't 127.0.0.1 "GET / HTTP/1.1" 200 1 rt=0 enc=- cache=MISS\n'
        )
        monkeypatch.setenv("SLUICE_CDN_EDGE_LOGS", str(tmp_path / "*.log"))
        reset()
        yield api
        monkeypatch.undo()
        reset()


def test_beat_tasks(task_env: FakeAPI, tmp_path: Path) -> None:
    from sluice.cdn import get_cdn_manager
    from sluice.cdn.tasks import compress_static, flush_invalidations, update_hit_ratio

    get_cdn_manager().queue_invalidation(["/static/app.js"])
    assert flush_invalidations.apply().get() == {
        "purged": 1,
        "requeued": 0,
        "calls": 1,
        "error": None,
        "skipped": False,
    }
    assert task_env.requests[0].json() == {"paths": ["/static/app.js"]}
    assert compress_static.apply().get()["compressed"] == 1
    assert (tmp_path / "static/app.js.br").exists()
    assert compress_static.apply().get()["unchanged"] == 1
    assert update_hit_ratio.apply().get()["cdn_cache_hit_ratio"] == 0.75


def test_rate_limited_flush_schedules_retry(
    task_env: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import Retry

    from sluice.cdn import get_cdn_manager
    from sluice.cdn.tasks import flush_invalidations

    countdowns: list[float] = []

    def retry(countdown: float) -> Retry:
        countdowns.append(countdown)
        return Retry("scheduled", when=countdown)

    monkeypatch.setattr(flush_invalidations, "retry", retry)
    task_env.script = [reply(429, {}, **{"Retry-After": "30"})]
    get_cdn_manager().queue_invalidation(["/static/app.js"])
    assert flush_invalidations.apply().state == "RETRY"
    assert countdowns == [30.0]
    assert get_cdn_manager().get_pending_invalidations() == ["/static/app.js"]
