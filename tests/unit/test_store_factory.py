"""get_store(): the backend the settings ask for, one instance per process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.settings import load_settings
from sluice.store import DiskStore, RedisStore, get_store, reset_store_cache


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    reset_store_cache()
    yield
    reset_store_cache()


def test_disk_store_without_redis_url(tmp_path: Path) -> None:
    settings = load_settings(
        {"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_KEY_PREFIX": "p:", "SLUICE_CODEC": "json"}
    )
    store = get_store(settings)
    assert isinstance(store, DiskStore)
    assert store.directory == tmp_path / "store"
    assert store.prefix == "p:"
    assert store.codec.fmt == "json"
    assert get_store(settings) is store


def test_redis_store_with_redis_url(tmp_path: Path) -> None:
    settings = load_settings(
        {"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_REDIS_URL": "redis://:pw@127.0.0.1:1/3"}
    )
    store = get_store(settings)  # redis-py connects lazily: nothing is contacted here
    assert isinstance(store, RedisStore)
    assert store.location == "127.0.0.1:1"


def test_cached_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path)})
    parent = get_store(settings)
    monkeypatch.setattr("os.getpid", lambda: -1)
    child = get_store(settings)
    assert child is not parent
    assert get_store(settings) is child


def test_reset_builds_a_new_store(tmp_path: Path) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path)})
    first = get_store(settings)
    reset_store_cache()
    assert get_store(settings) is not first


def test_defaults_to_process_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "sluice.store.get_settings", lambda: load_settings({"SLUICE_DATA_DIR": str(tmp_path)})
    )
    store = get_store()
    assert isinstance(store, DiskStore)
    assert store.directory == tmp_path / "store"
