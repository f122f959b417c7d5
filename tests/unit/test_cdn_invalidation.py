"""Purge paths and the durable invalidation queue (on the disk store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.cdn.config import load_cdn_settings
from sluice.cdn.invalidation import IN_FLIGHT_KEY, InvalidationQueue
from sluice.cdn.providers import PurgeCall, PurgeProvider, RateLimited
from sluice.cdn.purgepaths import (
    collapse,
    is_covered,
    surrogate_key_for_pattern,
    surrogate_keys,
    validate_purge_path,
    widen_to_trailing_wildcard,
)
from sluice.errors import BackendUnavailable, InvalidInput
from sluice.store import DiskStore


@pytest.mark.parametrize(
    "path",
    [
        "static/a.js",
        "/a b.js",
        "/a\\b",
        "/../etc",
        "/a/../b",
        "/a//b",
        "/caf\u00e9",
        "/a\n",
        "",
        None,
        3,
        "/" + "a" * 1100,
    ],
)
def test_invalid_paths_refused(path: object) -> None:
    with pytest.raises(InvalidInput):
        validate_purge_path(path)


@pytest.mark.parametrize(
    "path", ["/", "/*", "/static/js/app.*.js", "/a%20b.js", "/a.js?v=1", "/*/x.css"]
)
def test_valid_paths(path: str) -> None:
    assert validate_purge_path(path) == path


def test_widening() -> None:
    assert widen_to_trailing_wildcard("/static/js/app.*.js") == "/static/js/app.*"
    assert widen_to_trailing_wildcard("/static/*") == "/static/*"
    assert widen_to_trailing_wildcard("/a.js") == "/a.js"
    assert surrogate_key_for_pattern("/static/js/app.*.js") == "/static/js/"
    assert surrogate_key_for_pattern("/s*/x") is None
    assert surrogate_key_for_pattern("/a/b/c/d/*") == "/a/b/c/"
    assert surrogate_keys("/static/js/app.js") == ["/static/js/app.js", "/static/", "/static/js/"]


def test_collapse() -> None:
    many = [f"/static/js/{i}.js" for i in range(5)]
    assert collapse([*many, "/other.css"], threshold=4) == ["/static/js/*", "/other.css"]
    assert collapse([*many, "/a.js"], threshold=10) == [*many, "/a.js"]
    assert collapse(["/static/*", "/static/a.js", "/static/x/b.js", "/b.js"], 10) == [
        "/static/*",
        "/b.js",
    ]
    assert collapse(["/a.js", "/*", "/b.js"], 10) == ["/*"]
    assert collapse(["/a.js", "/a.js"], 10) == ["/a.js"]


class FakeProvider(PurgeProvider):
    """Records purges; fails as told. (HTTP behaviour is tested against real servers.)"""

    name = "fake"

    def __init__(self, fail_with: BackendUnavailable | None = None, chunk: int = 2) -> None:
        self.slept: list[float] = []
        super().__init__(
            load_cdn_settings({"SLUICE_CDN_MAX_RETRIES": "2"}), sleep=self.slept.append
        )
        self.fail_with = fail_with
        self.chunk = chunk
        self.sent: list[list[str]] = []
        self.attempts = 0

    def calls(self, paths: list[str]) -> list[PurgeCall]:
        return [
            PurgeCall(tuple(paths[i : i + self.chunk]), self._run(paths[i : i + self.chunk]), "x")
            for i in range(0, len(paths), self.chunk)
        ]

    def _run(self, batch: list[str]):  # type: ignore[no-untyped-def]
        def run() -> None:
            self.attempts += 1
            if self.fail_with is not None and len(self.sent) >= 1:
                raise self.fail_with
            self.sent.append(batch)

        return run


@pytest.fixture
def queue(tmp_path: Path) -> InvalidationQueue:
    return InvalidationQueue(DiskStore(tmp_path / "store"), wildcard_threshold=3)


def test_queue_validates_all_before_queueing(queue: InvalidationQueue) -> None:
    with pytest.raises(InvalidInput):
        queue.queue(["/ok.js", "bad"])
    assert queue.pending() == []


def test_queue_deduplicates(queue: InvalidationQueue) -> None:
    assert queue.queue(["/a.js", "/b.js", "/a.js"]) == 2
    assert queue.queue(["/b.js", "/c.js"]) == 1
    assert queue.pending() == ["/a.js", "/b.js", "/c.js"]
    assert len(queue) == 3  # pending() leaves them queued


def test_flush_purges_and_empties(queue: InvalidationQueue) -> None:
    queue.queue(["/a.js", "/b.js", "/c.js"])
    provider = FakeProvider()
    result = queue.flush(provider)
    assert result.purged == ["/a.js", "/b.js", "/c.js"] and result.calls == 2
    assert provider.sent == [["/a.js", "/b.js"], ["/c.js"]]
    assert queue.pending() == []
    assert queue.queue(["/a.js"]) == 1  # purged paths can be queued again


def test_failed_flush_requeues_the_rest(queue: InvalidationQueue) -> None:
    queue.queue(["/a.js", "/b.js", "/c.js"])
    provider = FakeProvider(fail_with=BackendUnavailable("down"))
    result = queue.flush(provider)
    assert result.purged == ["/a.js", "/b.js"] and result.requeued == ["/c.js"]
    assert result.error and "down" in result.error and result.retry_after is None
    assert provider.attempts == 1 + 3  # one success, then the first try and two retries
    assert len(provider.slept) == 2
    assert queue.pending() == ["/c.js"]
    assert queue.store.get(IN_FLIGHT_KEY) is None


def test_rate_limit_carries_retry_after(queue: InvalidationQueue) -> None:
    queue.queue(["/a.js", "/b.js", "/c.js"])
    result = queue.flush(FakeProvider(fail_with=RateLimited("slow down", retry_after=7)))
    assert result.retry_after == 7 and queue.pending() == ["/c.js"]


def test_collapsed_before_purge(queue: InvalidationQueue) -> None:
    queue.queue([f"/static/{i}.js" for i in range(5)])
    provider = FakeProvider()
    assert queue.flush(provider).purged == ["/static/*"]


def test_crashed_flush_is_recovered(queue: InvalidationQueue) -> None:
    queue.store.set(IN_FLIGHT_KEY, ["/lost.js"])
    assert queue.pending() == ["/lost.js"]
    provider = FakeProvider()
    queue.flush(provider)
    assert provider.sent == [["/lost.js"]]


def test_concurrent_flush_is_skipped(queue: InvalidationQueue) -> None:
    queue.queue(["/a.js"])
    with queue.store.lock("cdn:invalidation"):
        assert queue.flush(FakeProvider()).skipped
    assert queue.pending() == ["/a.js"]


@pytest.mark.parametrize("batch", [1, 7, 10, 33])
def test_a_wildcard_is_purged_once_per_flush_whatever_the_batch_size(
    tmp_path: Path, batch: int
) -> None:
    """100 files of one directory, taken in batches: each batch collapses to the same wildcard,
    which must be sent once, not once per batch (nor its files after it)."""
    queue = InvalidationQueue(DiskStore(tmp_path / "store"), wildcard_threshold=3, batch=batch)
    queue.queue([f"/static/{i}.js" for i in range(4)])
    queue.queue([f"/static/{i}.js" for i in range(4, 100)] + ["/other.css"])
    provider = FakeProvider(chunk=1000)
    queue.flush(provider)
    sent = [path for call in provider.sent for path in call]
    assert len(sent) == len(set(sent)), sent
    if batch > 3:  # a batch holds enough files of the directory to collapse it
        assert set(sent) <= {"/static/*", "/other.css", *(f"/static/{i}.js" for i in range(3))}
    assert "/other.css" in sent and queue.pending() == []
    assert all(is_covered(f"/static/{i}.js", sent) for i in range(100))


def test_everything_purged_once_covers_all_later_batches(tmp_path: Path) -> None:
    queue = InvalidationQueue(DiskStore(tmp_path / "store"), batch=2)
    queue.invalidate_all()
    queue.queue([f"/a/{i}.js" for i in range(9)])
    provider = FakeProvider(chunk=1000)
    queue.flush(provider)
    assert provider.sent == [["/*"]]


def test_paths_queued_during_a_flush_are_purged_again(tmp_path: Path) -> None:
    """A purge can reach the edge before content queued after it was deployed: not deduplicated."""
    queue = InvalidationQueue(DiskStore(tmp_path / "store"), batch=1)
    queue.queue(["/*"])

    class Requeueing(FakeProvider):
        def _run(self, batch: list[str]):  # type: ignore[no-untyped-def]
            inner = super()._run(batch)

            def run() -> None:
                inner()
                if batch == ["/*"]:
                    queue.queue(["/a.js"])

            return run

    provider = Requeueing(chunk=1000)
    queue.flush(provider)
    assert provider.sent == [["/*"], ["/a.js"]]
