"""L1: an in-process LRU with per-entry TTL, bounded by entries and by bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Final

from sluice.errors import InvalidInput

#: Returned by :meth:`L1MemoryCache.get` on a miss, so a cached ``None`` is still a hit.
MISSING: Final = object()


class L1MemoryCache:
    """Thread-safe LRU; O(1) get and set.

    Each entry is charged its encoded size (the caller passes it), so ``max_bytes`` bounds real memory
    use whatever the values are. Values are returned as stored: callers must not mutate them.
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise InvalidInput("L1 max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The value, or :data:`MISSING` when absent or expired."""
        if key not in self._data:
            # A miss needs no lock (a dict lookup is atomic): every L2 read starts with one.
            return MISSING
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return MISSING
            if item[1] <= time.monotonic():
                self._remove(key)
                return MISSING
            self._data.move_to_end(key)
            return item[0]

    def set(self, key: str, value: Any, ttl: float, size: int) -> bool:
        """Store ``value`` for ``ttl`` seconds; False when it alone exceeds ``max_bytes``."""
        with self._lock:
            if size > self.max_bytes:
                # Drop any older value too: keeping it would serve a value the caller replaced.
                self._remove(key)
                return False
            data = self._data
            old = data.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            data[key] = (value, time.monotonic() + ttl, size)
            self._bytes += size
            while len(data) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, _, evicted) = data.popitem(last=False)
                self._bytes -= evicted
        return True

    def replace(self, key: str, value: Any) -> None:
        """Swap the value of a present entry, keeping its expiry and size (no-op when absent)."""
        with self._lock:
            item = self._data.get(key)
            if item is not None:
                self._data[key] = (value, item[1], item[2])

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def _remove(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._bytes -= item[2]
        return True

    def __len__(self) -> int:
        return len(self._data)

    @property
    def memory_usage_bytes(self) -> int:
        return self._bytes
