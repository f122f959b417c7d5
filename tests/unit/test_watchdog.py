"""The consumer watchdog's rounds, without a broker: which queues it calls stalled, and when."""

from __future__ import annotations

import time

from sluice.workers.watchdog import STALL_INTERVALS, ConsumerWatchdog


class CountingWatchdog(ConsumerWatchdog):
    """Publishing a canary only counts it (the drill in test_drills.py publishes for real)."""

    def _publish_canary(self, queue: str) -> None:
        self.canaries_since[queue] += 1


def _watchdog(consuming: set[str]) -> CountingWatchdog:
    return CountingWatchdog(
        app=None, worker="w@h", queues=["critical", "low"], slots=2, interval=1.0,
        consuming=lambda: consuming,
    )  # fmt: skip


def _silence(watchdog: ConsumerWatchdog, seconds: float) -> None:
    for queue in watchdog.queues:
        watchdog.last_delivery[queue] = time.monotonic() - seconds


def test_a_silent_consumed_queue_is_stalled_after_its_canaries() -> None:
    watchdog = _watchdog({"critical", "low"})
    _silence(watchdog, STALL_INTERVALS + 1)
    rounds = [watchdog.check() for _ in range(STALL_INTERVALS)]
    assert rounds[0] == [] and rounds[-1] == ["critical", "low"]


def test_a_paused_queue_is_never_stalled_and_restarts_its_clock_when_resumed() -> None:
    consuming = {"critical"}  # `celery control cancel_consumer low`
    watchdog = _watchdog(consuming)
    _silence(watchdog, 10 * STALL_INTERVALS)
    for _ in range(2 * STALL_INTERVALS):
        assert "low" not in watchdog.check()
    assert watchdog.canaries_since["low"] == 0  # no canary into a queue nobody consumes
    consuming.add("low")  # `celery control add_consumer low`
    assert watchdog.check() == []  # low's silence is counted from its resumption
    _silence(watchdog, STALL_INTERVALS + 1)
    rounds = [watchdog.check() for _ in range(STALL_INTERVALS)]
    assert rounds[-1] == ["critical", "low"]


def test_a_delivery_on_any_queue_proves_the_consumer_alive() -> None:
    """A canary in a shared queue may go to another worker: one quiet queue is not a stall."""
    watchdog = _watchdog({"critical", "low"})
    _silence(watchdog, STALL_INTERVALS + 1)
    for _ in range(STALL_INTERVALS - 1):
        watchdog.check()
    watchdog.delivered("low")
    assert watchdog.check() == []
    watchdog.last_delivery["low"] = time.monotonic() - (STALL_INTERVALS + 1)
    for _ in range(STALL_INTERVALS - 1):
        watchdog.check()
    assert watchdog.check() == ["critical", "low"]
