"""The store contract on :class:`DiskStore`, plus its refusal to unpickle a tampered cache."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import diskcache
import pytest

from sluice.errors import BackendUnavailable, CodecError
from sluice.store import DiskStore
from sluice.store.disk import SafeDisk
from tests.store_contract import StoreContract, StoreSpec


class _Exploit:
    """Unpickling this would create ``marker``: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class TestDiskStore(StoreContract):
    @pytest.fixture
    def store_spec(self, tmp_path: Path) -> StoreSpec:
        return StoreSpec("disk", str(tmp_path / "store"), "sluice-test:")


@pytest.fixture
def disk_store(tmp_path: Path) -> Any:
    store = DiskStore(tmp_path / "store")
    yield store
    store.close()


@pytest.mark.parametrize("padding", [0, 100_000], ids=["inline-row", "value-file"])
def test_planted_pickle_row_is_refused(disk_store: DiskStore, tmp_path: Path, padding: int) -> None:
    marker = tmp_path / "pwned"
    # A plain diskcache.Cache pickles anything that is not bytes/str/int/float: MODE_PICKLE rows.
    plain = diskcache.Cache(str(disk_store.directory))
    plain.set("sluice:evil", [_Exploit(marker), "x" * padding])
    plain.close()
    with pytest.raises(CodecError, match="pickled"):
        disk_store.get("evil")
    with pytest.raises(CodecError):
        disk_store.get_many(["evil"])
    assert not marker.exists()


def test_planted_pickle_bytes_value_is_refused(disk_store: DiskStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plain = diskcache.Cache(str(disk_store.directory))
    plain.set("sluice:evil", pickle.dumps(_Exploit(marker)))  # raw bytes that look like a pickle
    plain.close()
    with pytest.raises(CodecError, match="unknown payload header 0x80"):
        disk_store.get("evil")
    assert not marker.exists()


def test_safe_disk_refuses_what_diskcache_would_pickle(tmp_path: Path) -> None:
    disk = SafeDisk(str(tmp_path), min_file_size=1024)
    with pytest.raises(CodecError):
        disk.put(("tuple", "key"))
    with pytest.raises(CodecError):
        disk.get(b"\x80\x04...", raw=False)
    with pytest.raises(CodecError):
        disk.store({"a": 1}, read=False)
    assert disk.store(b"ok", read=False)[1] == diskcache.core.MODE_RAW


def test_pubsub_needs_redis(disk_store: DiskStore) -> None:
    assert not disk_store.supports_pubsub
    with pytest.raises(BackendUnavailable, match="SLUICE_REDIS_URL"):
        disk_store.publish("ch", 1)
    with pytest.raises(BackendUnavailable, match="SLUICE_REDIS_URL"):
        disk_store.subscribe("ch")


def test_reopens_after_fork(disk_store: DiskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    disk_store.set("k", 1)
    parent_cache = disk_store._cache
    monkeypatch.setattr("os.getpid", lambda: -1)
    assert disk_store.get("k") == 1
    assert disk_store._cache is not parent_cache


def test_empty_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix"):
        DiskStore(tmp_path, prefix="")
