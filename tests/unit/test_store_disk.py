"""The store contract on :class:`DiskStore`, plus its refusal to unpickle a tampered cache."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
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
    with pytest.raises(CodecError, match="pickled"):
        disk_store.get_encoded("evil")  # the SQL fast path hands such rows to SafeDisk
    with pytest.raises(CodecError):
        disk_store.get_many_encoded(["evil"])
    assert not marker.exists()


def test_planted_pickle_bytes_value_is_refused(disk_store: DiskStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plain = diskcache.Cache(str(disk_store.directory))
    plain.set("sluice:evil", pickle.dumps(_Exploit(marker)))  # raw bytes that look like a pickle
    plain.close()
    with pytest.raises(CodecError, match="unknown payload header 0x80"):
        disk_store.get("evil")
    assert not marker.exists()


@pytest.mark.parametrize(
    "old", ["pickled-row", "pickled-file", "file", "counter", "hash", "list", "expired", "none"]
)
@pytest.mark.parametrize("size", [10, 100_000], ids=["inline", "file"])
def test_set_encoded_replaces_every_row_form(
    disk_store: DiskStore, tmp_path: Path, old: str, size: int
) -> None:
    """The one-statement UPDATE of set_encoded and the SELECT of get_encoded serve only inline
    untagged rows; every other form goes through diskcache, leaving no old file or list item."""
    full = "sluice:k"
    plain = diskcache.Cache(str(disk_store.directory))
    if old.startswith("pickled"):
        plain.set(
            full, [_Exploit(tmp_path / "pwned"), "x" * (100_000 if old == "pickled-file" else 0)]
        )
    elif old == "file":
        plain.set(full, b"\x02" + b"x" * 100_000)
    plain.close()
    if old == "counter":
        disk_store.incr("k", 5)
    elif old == "hash":
        disk_store.hincr("k", "f")
    elif old == "list":
        disk_store.push("k", 1, 2)
    elif old == "expired":
        disk_store.set("k", "old", ttl=0.05)
    value = random.Random(size).randbytes(size)  # incompressible: 100 kB stays a value file
    data = disk_store.codec.encode(value)
    disk_store.set_encoded("k", data, ttl=60)
    assert disk_store.get_encoded("k") == data
    assert disk_store.get("k") == value
    assert 0 < (disk_store.ttl("k") or 0) <= 60
    cache = disk_store._cache
    items = [key for key in cache.iterkeys() if isinstance(key, str) and key.startswith(full)]
    assert items == [full]  # no list item survives
    files = list(Path(disk_store.directory).rglob("*.val"))
    assert len(files) == (1 if len(data) >= 2**15 else 0)  # no old value file survives
    assert not (tmp_path / "pwned").exists()


def test_set_encoded_without_ttl_never_expires(disk_store: DiskStore) -> None:
    data = disk_store.codec.encode(1)
    disk_store.set_encoded("k", data, ttl=0.05)
    disk_store.set_encoded("k", data)  # the UPDATE path clears the old expiry
    assert disk_store.ttl("k") is None and disk_store.get_encoded("k") == data


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


_HOLD = """
import sys, time
from sluice.store import DiskStore
lock = DiskStore(sys.argv[1]).lock("fill", lease=60)
assert lock.acquire(blocking=False)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("ends", ["killed", "exits"])
def test_a_lock_whose_holder_process_is_gone_is_taken_at_once(
    disk_store: DiskStore, ends: str
) -> None:
    """Every disk-store holder runs on this machine: a dead one is not waited out for its lease
    (a killed or stopped embedded worker's fill locks)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(disk_store.directory), "60" if ends == "killed" else "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    waiter = disk_store.lock("fill", lease=60)
    assert not waiter.acquire(blocking=False), "a live holder in another process keeps its lock"
    if ends == "killed":
        holder.kill()
    holder.wait()
    assert waiter.acquire(blocking=False), "the lease (60 s) of a dead holder was waited out"
    assert waiter.held()
    waiter.release()


def test_a_lock_whose_holder_cannot_be_judged_waits_for_its_lease(disk_store: DiskStore) -> None:
    """A token that names no process (not written by sluice's StoreLock) is never taken early."""
    with disk_store._txn() as cache:
        cache.add(disk_store._key("lock:fill"), "someone-else", expire=60, tag="lock")
    assert not disk_store.lock("fill", lease=60).acquire(blocking=False)
