"""Celery signal receivers: CDN purge outcomes become cluster-wide counters."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import states

from sluice.monitoring import recorder, signals, sources
from sluice.store import get_store


@pytest.fixture(autouse=True)
def clean_counters() -> None:
    recorder.flush()
    get_store().delete(recorder.COUNTERS_KEY)


def totals() -> dict[str, int]:
    recorder.flush()
    return {key.metric: values["n"] for key, values in sources.recorded_counters().items()}


def test_failed_and_successful_flushes_are_counted() -> None:
    flush = SimpleNamespace(name=signals.CDN_FLUSH_TASK)
    signals.count_cdn_flush(flush, {"purged": 3, "error": None}, states.SUCCESS)
    signals.count_cdn_flush(flush, {"purged": 1, "error": "403 Forbidden"}, states.SUCCESS)
    signals.count_cdn_flush(flush, RuntimeError("retry"), states.RETRY)
    assert totals() == {"cdn_purge_run": 3, "cdn_paths_purged": 4, "cdn_purge_failure": 2}


def test_skipped_flushes_and_other_tasks_are_ignored() -> None:
    signals.count_cdn_flush(
        SimpleNamespace(name=signals.CDN_FLUSH_TASK), {"skipped": "no provider"}, states.SUCCESS
    )
    signals.count_cdn_flush(SimpleNamespace(name="sluice.handlers.analysis"), None, states.FAILURE)
    assert totals() == {}
