"""Fixtures shared by the unit tests of the task layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.settings import get_settings
from sluice.workers import DeadLetterQueue
from tests.worker_fixtures import settings_env


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A private data directory (store, SQLite database) with async processing on."""
    with settings_env(SLUICE_DATA_DIR=str(tmp_path / "data")):
        get_settings().data_dir.mkdir(parents=True, exist_ok=True)
        yield tmp_path / "data"


@pytest.fixture
def sync_mode(data_dir: Path) -> Iterator[DeadLetterQueue]:
    """ASYNC_PROCESSING_ENABLED=false with a migrated dead-letter table; yields the DLQ."""
    with settings_env(ASYNC_PROCESSING_ENABLED="false"):
        assert get_settings().async_processing_enabled is False
        dlq = DeadLetterQueue()
        dlq.ensure_schema()
        yield dlq
