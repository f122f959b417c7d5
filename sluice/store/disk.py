"""The single-machine backend: a diskcache (SQLite) directory shared by every local process.

Each multi-step operation runs inside ``cache.transact()``, one ``BEGIN IMMEDIATE`` SQLite
transaction, which serializes writers across processes. Rows hold only bytes, str, int and float:
:class:`SafeDisk` replaces diskcache's pickle serialization, so a tampered cache file can never make
sluice execute code.

Row kinds are told apart by diskcache's ``tag`` column: untagged bytes are codec values, untagged
ints are counters, and tagged rows hold a counter hash, list metadata, bucket state or a lock owner.
A list ``k`` is a metadata row ``[head, tail]`` plus one row per item at ``k + "\\0" + index``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, MODE_RAW, UNKNOWN

from sluice.errors import BackendTimeout, BackendUnavailable, CodecError, InvalidInput
from sluice.processes import owner_alive
from sluice.store.base import (
    Quota,
    QuotaGrant,
    Store,
    Subscription,
    TokenGrant,
    check_amount,
    check_bytes,
    check_count,
    check_key,
    check_ttl,
    require_ttl,
)
from sluice.store.codec import Codec
from sluice.store.quota import LEDGER_TTL, Ledger

_HASH = "hash"
_LIST = "list"
_BUCKET = "bucket"
_LOCK = "lock"
_QUOTA = "quota"

# Seconds a writer waits for another process's transaction before BackendUnavailable.
SQLITE_TIMEOUT = 60.0
# Eviction is off, so this only has to exceed any realistic store; it is never a quota.
SIZE_LIMIT = 2**40

_PLAIN_TYPES = (bytes, str, int, float)
_BACKEND_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)

# The hot paths of codec values, in SQL: only an inline, untagged row of bytes is served by them
# (diskcache's MODE_RAW; a pickled, file-backed or tagged row never is), so every other row still
# goes through diskcache and :class:`SafeDisk`, which refuse pickles. One statement each, where
# diskcache's get/set add their Python layers (and set a transaction: a single UPDATE is atomic).
_SELECT_VALUE = (
    "SELECT value, mode, tag FROM Cache WHERE key = ? AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?)"
)
_SELECT_TAG = "SELECT tag FROM Cache WHERE key = ? AND raw = 1"
_UPDATE_VALUE = (
    "UPDATE Cache SET store_time = ?, expire_time = ?, access_time = ?, access_count = 0,"
    " size = 0, mode = ?, value = ?"
    " WHERE key = ? AND raw = 1 AND tag IS NULL AND filename IS NULL"
)


class SafeDisk(diskcache.Disk):
    """A diskcache serializer that stores only bytes, str, int and float, and never unpickles."""

    def put(self, key: Any) -> tuple[Any, bool]:
        """Refuse keys diskcache would pickle."""
        if type(key) not in _PLAIN_TYPES:
            raise CodecError(
                f"disk store keys must be str/bytes/int/float, not {type(key).__name__}"
            )
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        """Refuse pickled keys (only a foreign writer or tampering can produce them)."""
        if not raw:
            raise CodecError("refusing a pickled key in the disk store")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        """Refuse values diskcache would pickle, and file-like values."""
        if read or type(value) not in _PLAIN_TYPES:
            raise CodecError(
                f"disk store values must be bytes/str/int/float, not {type(value).__name__}"
            )
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Refuse pickled rows instead of loading them."""
        if mode == MODE_PICKLE:
            raise CodecError("refusing a pickled value in the disk store (it is never loaded)")
        return super().fetch(mode, filename, value, read)


class DiskStore(Store):
    """A :class:`Store` in a local directory; safe across processes and threads on one machine.

    :param directory: where the SQLite database and large values live (created if missing).
    :param prefix: prepended to every key.
    :param codec: how values are serialized (default: msgpack, compressed from 1 KiB).
    """

    def __init__(
        self, directory: str | os.PathLike[str], prefix: str = "sluice:", codec: Codec | None = None
    ) -> None:
        super().__init__(prefix)
        self.directory = Path(directory)
        self.codec = codec or Codec()
        # Caches opened by an ancestor process: kept referenced so the child never finalizes (and
        # thereby touches) SQLite handles it inherited across fork.
        self._inherited: list[diskcache.Cache] = []
        self._pid = os.getpid()
        self._local = threading.local()
        with self._guard():
            self._opened = self._open()

    def __repr__(self) -> str:
        return f"DiskStore({str(self.directory)!r}, prefix={self.prefix!r})"

    def _open(self) -> diskcache.Cache:
        return diskcache.Cache(
            str(self.directory),
            timeout=SQLITE_TIMEOUT,
            disk=SafeDisk,
            # The store must never silently drop a counter or a queued item.
            eviction_policy="none",
            size_limit=SIZE_LIMIT,
            statistics=False,
        )

    @property
    def _cache(self) -> diskcache.Cache:
        if self._pid != os.getpid():
            self._inherited.append(self._opened)
            self._opened = self._open()
            self._pid = os.getpid()
        return self._opened

    def _execute(self) -> Callable[..., sqlite3.Cursor]:
        """This thread's SQLite ``execute``, as diskcache's own operations use it.

        diskcache finds it through two properties and a process check per statement; the hot
        paths look it up once per thread and cache (a reopened cache, after a fork, is new).
        """
        local = self._local
        cache = self._cache
        if getattr(local, "cache", None) is not cache:
            local.execute = cache._sql
            local.cache = cache
        execute: Callable[..., sqlite3.Cursor] = local.execute
        return execute

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        # A statement outside diskcache's transactions waits on SQLite's busy timeout instead.
        if isinstance(exc, diskcache.Timeout) or (
            isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        ):
            return BackendTimeout(
                f"disk store at {self.directory} stayed locked by another process for "
                f"{SQLITE_TIMEOUT:g} s ({exc or 'timeout'})"
            )
        return BackendUnavailable(
            f"disk store at {self.directory} failed: {type(exc).__name__}: {exc}"
        )

    @contextmanager
    def _txn(self) -> Iterator[diskcache.Cache]:
        cache = self._cache
        with self._guard(), cache.transact():
            yield cache

    def _read(self, full: str) -> tuple[Any, str | None]:
        # Not through _guard: a plain try costs less than a context manager on the hot path.
        try:
            return self._cache.get(full, tag=True)
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from None

    def _value_bytes(self, key: str, value: Any, tag: str | None) -> bytes:
        if tag is not None:
            raise InvalidInput(f"key {key!r} holds a {tag}, not a value")
        if not isinstance(value, bytes):
            raise CodecError(f"key {key!r} holds a counter, not a codec value")
        return value

    def _decode_value(self, key: str, value: Any, tag: str | None) -> Any:
        return self.codec.decode(self._value_bytes(key, value, tag))

    def _meta(self, key: str, value: Any, tag: str | None, kind: str) -> Any:
        """Decode a tagged row of ``kind``; None when absent."""
        if value is None:
            return None
        if tag != kind:
            raise InvalidInput(f"key {key!r} does not hold a {kind}")
        return self.codec.decode(value)

    # -- plain values --------------------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        """See :meth:`Store.get`."""
        value, tag = self._read(self._key(key))
        return None if value is None else self._decode_value(key, value, tag)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """See :meth:`Store.set`."""
        full, ttl = self._key(key), check_ttl(ttl)
        data = self.codec.encode(value)
        with self._txn() as cache:
            self._replace(cache, full)
            cache.set(full, data, expire=ttl)

    def get_encoded(self, key: str) -> bytes | None:
        """See :meth:`Store.get_encoded`."""
        full = self._key(key)
        try:
            rows = self._execute()(_SELECT_VALUE, (full, time.time())).fetchall()
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from None
        if not rows:
            return None
        ((value, mode, tag),) = rows
        if mode == MODE_RAW and tag is None and type(value) is bytes:
            return value
        # A counter, a file-backed value, a tagged or a refused row: diskcache's full path.
        value, tag = self._read(full)
        return None if value is None else self._value_bytes(key, value, tag)

    def get_many_encoded(self, keys: Iterable[str]) -> dict[str, bytes]:
        """See :meth:`Store.get_many_encoded`."""
        found = {}
        for key in keys:
            value, tag = self._read(self._key(key))
            if value is not None:
                found[key] = self._value_bytes(key, value, tag)
        return found

    def set_encoded(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """See :meth:`Store.set_encoded`."""
        full, ttl, data = self._key(key), check_ttl(ttl), check_bytes(data)
        cache = self._cache
        if len(data) < cache.disk_min_file_size:
            # Replacing an inline untagged row (a value or a counter): one atomic UPDATE.
            now = time.time()
            expire = None if ttl is None else now + ttl
            try:
                cursor = self._execute()(_UPDATE_VALUE, (now, expire, now, MODE_RAW, data, full))
            except _BACKEND_ERRORS as exc:
                raise self._unavailable(exc) from None
            if cursor.rowcount == 1:
                return
        # A new key, a list to drop, a file to clean up, or a large value: diskcache's path.
        with self._txn() as cache:
            self._replace(cache, full)
            cache.set(full, data, expire=ttl)

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """See :meth:`Store.add`."""
        full, ttl = self._key(key), check_ttl(ttl)
        data = self.codec.encode(value)
        with self._guard():
            return bool(self._cache.add(full, data, expire=ttl))

    def delete(self, *keys: str) -> int:
        """See :meth:`Store.delete`."""
        full = [self._key(key) for key in keys]
        with self._txn() as cache:
            return sum(self._drop(cache, name) for name in full)

    def _replace(self, cache: diskcache.Cache, full: str) -> None:
        """Make way for a new value at ``full`` (call inside a transaction): a list's items go;
        any other row is overwritten in place, tag included, by the caller's set."""
        # The tag alone: loading the old value would refuse a planted pickle it is replacing.
        rows = cache._sql(_SELECT_TAG, (full,)).fetchall()
        if rows and rows[0][0] == _LIST:
            self._drop(cache, full)

    def _drop(self, cache: diskcache.Cache, full: str) -> bool:
        """Delete one key and, for a list, its items; call inside a transaction."""
        value, tag = cache.get(full, tag=True)
        if value is None:
            return False
        if tag == _LIST:
            head, tail = self.codec.decode(value)
            for index in range(head, tail):
                cache.delete(_item(full, index))
        cache.delete(full)
        return True

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """See :meth:`Store.get_many`."""
        found = {}
        for key in keys:
            value, tag = self._read(self._key(key))
            if value is not None:
                found[key] = self._decode_value(key, value, tag)
        return found

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """See :meth:`Store.set_many`."""
        self.set_many_encoded({k: self.codec.encode(v) for k, v in mapping.items()}, ttl)

    def set_many_encoded(self, mapping: Mapping[str, bytes], ttl: float | None = None) -> None:
        """See :meth:`Store.set_many_encoded`."""
        ttl = check_ttl(ttl)
        encoded = {self._key(key): check_bytes(data) for key, data in mapping.items()}
        with self._txn() as cache:
            for full, data in encoded.items():
                self._replace(cache, full)
                cache.set(full, data, expire=ttl)

    def touch_many(self, keys: Iterable[str], ttl: float) -> frozenset[str]:
        """See :meth:`Store.touch_many`."""
        ttl = require_ttl(ttl)
        names = {key: self._key(key) for key in keys}
        present = set()
        with self._txn() as cache:
            for key, full in names.items():
                value, tag = cache.get(full, tag=True)
                if value is None:
                    continue
                if tag == _LIST:  # its items expire with it, as a Redis list does
                    head, tail = self.codec.decode(value)
                    for index in range(head, tail):
                        cache.touch(_item(full, index), expire=ttl)
                cache.touch(full, expire=ttl)
                present.add(key)
        return frozenset(present)

    def ttl(self, key: str) -> float | None:
        """See :meth:`Store.ttl`."""
        full = self._key(key)
        with self._guard():
            value, expire_time = self._cache.get(full, expire_time=True)
        if value is None or expire_time is None:
            return None
        return max(0.0, expire_time - time.time())

    def exists(self, key: str) -> bool:
        """See :meth:`Store.exists`."""
        full = self._key(key)
        with self._guard():
            return full in self._cache

    # -- counters ------------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """See :meth:`Store.incr`."""
        full, amount, ttl = self._key(key), check_amount(amount), check_ttl(ttl)
        with self._txn() as cache:
            value, tag = cache.get(full, tag=True)
            if value is None:
                cache.set(full, amount, expire=ttl)
                return amount
            if tag is not None or type(value) is not int:
                raise InvalidInput(f"key {key!r} does not hold a counter")
            # diskcache's incr keeps the row's expiry, which a set() would reset.
            return int(cache.incr(full, amount))

    def get_counter(self, key: str) -> int:
        """See :meth:`Store.get_counter`."""
        value, tag = self._read(self._key(key))
        if value is None:
            return 0
        if tag is not None or type(value) is not int:
            raise InvalidInput(f"key {key!r} does not hold a counter")
        return value

    def hincr(self, key: str, field: str, amount: int = 1) -> int:
        """See :meth:`Store.hincr`."""
        full, field, amount = self._key(key), check_key(field), check_amount(amount)
        with self._txn() as cache:
            value, tag = cache.get(full, tag=True)
            counters = self._meta(key, value, tag, _HASH) or {}
            counters[field] = counters.get(field, 0) + amount
            cache.set(full, self.codec.encode(counters), tag=_HASH)
        return int(counters[field])

    def hincr_drop_zero(self, key: str, field: str, amount: int) -> int:
        """See :meth:`Store.hincr_drop_zero`."""
        full, field, amount = self._key(key), check_key(field), check_amount(amount)
        with self._txn() as cache:
            value, tag = cache.get(full, tag=True)
            counters = self._meta(key, value, tag, _HASH) or {}
            result = counters.get(field, 0) + amount
            if result:
                counters[field] = result
            else:
                counters.pop(field, None)
            cache.set(full, self.codec.encode(counters), tag=_HASH)
        return int(result)

    def hgetall_counters(self, key: str) -> dict[str, int]:
        """See :meth:`Store.hgetall_counters`."""
        value, tag = self._read(self._key(key))
        counters = self._meta(key, value, tag, _HASH) or {}
        return {name: int(count) for name, count in counters.items()}

    def _take_token(self, full_key: str, rate: float, burst: float, tokens: float) -> TokenGrant:
        with self._txn() as cache:
            value, tag = cache.get(full_key, tag=True)
            state = self._meta(full_key, value, tag, _BUCKET)
            # Every local process shares the machine's wall clock, so time.time() is consistent.
            now = time.time()
            available, stamp = (burst, now) if state is None else state
            available = min(burst, available + max(0.0, now - stamp) * rate)
            granted = available >= tokens
            wait = 0.0
            if granted:
                available -= tokens
            else:
                wait = (tokens - available) / rate
            expire = max(1.0, 2 * burst / rate)
            cache.set(full_key, self.codec.encode([available, now]), expire=expire, tag=_BUCKET)
        return TokenGrant(granted, wait, available)

    # -- quota ledgers -------------------------------------------------------------------------

    @contextmanager
    def _ledger(self, full_key: str) -> Iterator[Ledger]:
        """The ledger at ``full_key`` inside an IMMEDIATE transaction, written back on exit."""
        with self._txn() as cache:
            value, tag = cache.get(full_key, tag=True)
            ledger = Ledger.from_data(self._meta(full_key, value, tag, _QUOTA))
            yield ledger
            cache.set(full_key, self.codec.encode(ledger.to_data()), expire=LEDGER_TTL, tag=_QUOTA)

    def _reserve_quota(
        self,
        full_key: str,
        reservation: str,
        quota: Quota,
        tokens: float,
        cost: float,
        share: float,
        lease: float,
    ) -> QuotaGrant:
        with self._ledger(full_key) as ledger:
            # Every local process shares the machine's wall clock, so time.time() is consistent.
            return ledger.reserve(time.time(), reservation, quota, tokens, cost, share, lease)

    def _settle_quota(
        self, full_key: str, reservation: str, quota: Quota, tokens: float, cost: float
    ) -> None:
        with self._ledger(full_key) as ledger:
            ledger.settle(time.time(), reservation, quota, tokens, cost)

    def _release_quota(self, full_key: str, reservation: str, quota: Quota) -> bool:
        with self._ledger(full_key) as ledger:
            ledger.expire(time.time(), quota.window)
            return ledger.release(reservation)

    def _quota_state(self, full_key: str, quota: Quota) -> QuotaGrant:
        value, tag = self._read(full_key)
        ledger = Ledger.from_data(self._meta(full_key, value, tag, _QUOTA))
        ledger.expire(time.time(), quota.window)
        return ledger.state(False, 0.0, None)

    # -- locks ---------------------------------------------------------------------------------

    def _lock_acquire(self, full_key: str, owner: str, lease: float) -> bool:
        with self._txn() as cache:
            # add() treats an expired row as absent, so a lapsed lease frees the lock; the owner
            # taking it again renews it (as on Redis, where a retried command must not fail).
            if cache.add(full_key, owner, expire=lease, tag=_LOCK):
                return True
            holder = cache.get(full_key)
            if holder == owner:
                return bool(cache.touch(full_key, expire=lease))
            # Every holder runs on this machine: one that no longer exists (a killed or stopped
            # worker) is not waited out for the rest of its lease.
            identity, mine, _ = holder.partition("/") if isinstance(holder, str) else ("", "", "")
            if mine and not owner_alive(identity):
                return bool(cache.set(full_key, owner, expire=lease, tag=_LOCK))
            return False

    def _lock_renew(self, full_key: str, owner: str, lease: float) -> bool:
        with self._txn() as cache:
            if cache.get(full_key) != owner:
                return False
            return bool(cache.touch(full_key, expire=lease))

    def _lock_release(self, full_key: str, owner: str) -> bool:
        with self._txn() as cache:
            if cache.get(full_key) != owner:
                return False
            return bool(cache.delete(full_key))

    def _lock_owner(self, full_key: str) -> str | None:
        value, _ = self._read(full_key)
        return value if isinstance(value, str) else None

    # -- lists ---------------------------------------------------------------------------------

    def push(self, key: str, *values: Any) -> int:
        """See :meth:`Store.push`."""
        full = self._key(key)
        encoded = [self.codec.encode(value) for value in values]
        with self._txn() as cache:
            value, tag = cache.get(full, tag=True)
            head, tail = self._meta(key, value, tag, _LIST) or (0, 0)
            if not encoded:
                return int(tail - head)
            for data in encoded:
                cache.set(_item(full, tail), data)
                tail += 1
            cache.set(full, self.codec.encode([head, tail]), tag=_LIST)
        return int(tail - head)

    def pop_many(self, key: str, count: int) -> list[Any]:
        """See :meth:`Store.pop_many`."""
        full, count = self._key(key), check_count(count)
        popped: list[bytes] = []
        with self._txn() as cache:
            value, tag = cache.get(full, tag=True)
            meta = self._meta(key, value, tag, _LIST)
            if meta is None:
                return []
            head, tail = meta
            stop = min(tail, head + count)
            for index in range(head, stop):
                popped.append(cache.pop(_item(full, index)))
            if stop == tail:
                cache.delete(full)  # an empty list does not exist, as on Redis
            else:
                cache.set(full, self.codec.encode([stop, tail]), tag=_LIST)
        return [self.codec.decode(data) for data in popped]

    def length(self, key: str) -> int:
        """See :meth:`Store.length`."""
        value, tag = self._read(self._key(key))
        meta = self._meta(key, value, tag, _LIST)
        return 0 if meta is None else int(meta[1] - meta[0])

    # -- pub/sub -------------------------------------------------------------------------------

    @property
    def supports_pubsub(self) -> bool:
        """Always False: a directory cannot push messages to subscribers."""
        return False

    def publish(self, channel: str, message: Any) -> int:
        """Unsupported: raises :class:`BackendUnavailable`."""
        raise BackendUnavailable("pub/sub needs Redis: set SLUICE_REDIS_URL")

    def subscribe(self, channel: str) -> Subscription:
        """Unsupported: raises :class:`BackendUnavailable`."""
        raise BackendUnavailable("pub/sub needs Redis: set SLUICE_REDIS_URL")

    # -- administration ------------------------------------------------------------------------

    def ping(self) -> bool:
        """See :meth:`Store.ping`."""
        try:
            with self._guard():
                self._cache.get(self.prefix + "\x00ping")
        except BackendUnavailable:
            return False
        return True

    def close(self) -> None:
        """See :meth:`Store.close`."""
        self._cache.close()

    def clear_namespace(self) -> int:
        """See :meth:`Store.clear_namespace`; returns the number of rows removed."""
        with self._guard():
            names = [
                name
                for name in self._cache.iterkeys()
                if isinstance(name, str) and name.startswith(self.prefix)
            ]
        with self._txn() as cache:
            return sum(bool(cache.delete(name)) for name in names)


def _item(full: str, index: int) -> str:
    return f"{full}\x00{index}"
