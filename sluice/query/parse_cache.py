"""ByteBudgetCache: a thread-safe LRU memo bounded by the bytes its entries account for.

The normalizer's memo of parsed statements used to be bounded by entry count (4,096 of them),
which let a few distinct megabyte-sized statements hold gigabytes of syntax trees. Here every
entry is charged a caller-given size and the least recently used entries are dropped until the
total is within ``max_bytes``; an entry larger than the whole budget is computed but never kept.
Long keys are replaced by a digest, so the memo does not keep a copy of a huge statement either.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from sluice.errors import InvalidInput

V = TypeVar("V")

# Keys at least this long are stored as a 32-byte digest (collisions are not a practical concern).
_DIGEST_KEYS_FROM = 256


class ByteBudgetCache(Generic[V]):
    """Memoises ``compute(key)`` within ``max_bytes`` as charged by ``size_of(key, value)``."""

    def __init__(
        self,
        compute: Callable[[str], V],
        size_of: Callable[[str, V], int],
        max_bytes: int,
    ) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise InvalidInput(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self._compute = compute
        self._size_of = size_of
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str | bytes, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, key: str) -> V:
        """The memoised value of ``key``, computing (outside the lock) on a miss."""
        slot = _slot(key)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None:
                self._entries.move_to_end(slot)
                return entry[0]
        value = self._compute(key)
        size = len(slot) + max(0, self._size_of(key, value))
        if size > self.max_bytes:
            return value
        with self._lock:
            previous = self._entries.pop(slot, None)
            if previous is not None:
                self._bytes -= previous[1]
            self._entries[slot] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    @property
    def accounted_bytes(self) -> int:
        """The bytes charged for the entries currently kept (never above ``max_bytes``)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _slot(key: str) -> str | bytes:
    # A digest is bytes and a short key is str: the two can never be equal.
    if len(key) < _DIGEST_KEYS_FROM:
        return key
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32).digest()
