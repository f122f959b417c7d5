"""sluice's shared store: one :class:`Store` interface, a Redis and a local-disk backend.

Use :func:`get_store` to obtain the process's store: Redis when ``SLUICE_REDIS_URL`` is set,
otherwise a diskcache directory under the data directory.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from sluice.lazy import lazy_exports
from sluice.settings import Settings, get_settings
from sluice.store.base import Quota, QuotaGrant, Store, StoreLock, TokenGrant
from sluice.store.codec import MAX_DECODED_ITEMS, MAX_DECOMPRESSED_BYTES, Codec
from sluice.store.counters import BufferedCounters

if TYPE_CHECKING:
    from sluice.store.disk import DiskStore
    from sluice.store.redis import RedisStore

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # the interface and the process's store
    "Store",
    "get_store",
    "reset_store_cache",
    "backend_module",
    # backends
    "RedisStore",
    "DiskStore",
    # what it returns and uses
    "StoreLock",
    "TokenGrant",
    "Quota",
    "QuotaGrant",
    "BufferedCounters",
    "Codec",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_DECODED_ITEMS",
]

# Each backend loads on first use: redis-py costs a worker on the embedded defaults 40 ms, and
# diskcache (with sqlite3) a process on Redis 4 ms.
__getattr__ = lazy_exports(__name__, {"RedisStore": "redis", "DiskStore": "disk"})

_stores: dict[tuple[int, Settings], Store] = {}
_stores_lock = threading.Lock()


def get_store(settings: Settings | None = None) -> Store:
    """The store configured by ``settings`` (default: the process settings), one per process.

    Stores are cached per ``os.getpid()``, so a forked Celery worker child opens its own connection
    instead of sharing its parent's socket or SQLite handle.
    """
    settings = settings or get_settings()
    pid = os.getpid()
    with _stores_lock:
        store = _stores.get((pid, settings))
        if store is None:
            # Entries made by the parent before a fork are dropped unclosed: closing them here
            # would act on connections the parent still uses.
            for stale in [key for key in _stores if key[0] != pid]:
                del _stores[stale]
            store = _stores[(pid, settings)] = _build(settings)
        return store


def backend_module(settings: Settings) -> str:
    """The module of the backend ``settings`` configure (for a worker to import before it forks)."""
    return "sluice.store.redis" if settings.redis_url else "sluice.store.disk"


def _build(settings: Settings) -> Store:
    codec = Codec(settings.codec, settings.compress_min_bytes)
    if settings.redis_url:
        from sluice.store.redis import RedisStore

        return RedisStore(settings.redis_url, prefix=settings.key_prefix, codec=codec)
    from sluice.store.disk import DiskStore

    return DiskStore(settings.data_dir / "store", prefix=settings.key_prefix, codec=codec)


def reset_store_cache() -> None:
    """Close and forget this process's cached stores (for tests and settings reloads)."""
    pid = os.getpid()
    with _stores_lock:
        for key, store in list(_stores.items()):
            if key[0] == pid:
                store.close()
        _stores.clear()
