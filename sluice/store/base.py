"""The shared-store interface every backend implements, and the lock built on top of it.

A :class:`Store` is a small key/value service shared by every process of a deployment: plain values
(through a :class:`~sluice.store.codec.Codec`), integer counters, token buckets, leased locks,
durable FIFO lists and, on Redis, pub/sub. Every key is namespaced with the store's ``prefix``.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sluice.errors import BackendUnavailable, InvalidInput, SluiceError
from sluice.processes import process_identity
from sluice.store.codec import Codec

log = logging.getLogger(__name__)

# A blocked acquire polls between these bounds: short at first so handover is fast, then slower.
_POLL_MIN = 0.001
_POLL_MAX = 0.05
#: Seconds between renewal attempts of a lock while its store does not answer.
RETRY_AFTER_OUTAGE = 0.1


@dataclass(frozen=True)
class TokenGrant:
    """The outcome of :meth:`Store.take_token`.

    :ivar granted: whether the tokens were taken.
    :ivar wait_seconds: 0 when granted, else how long until the requested tokens will be available.
    :ivar remaining: tokens left in the bucket after this call.
    """

    granted: bool
    wait_seconds: float
    remaining: float


@dataclass(frozen=True)
class Quota:
    """The caps of one shared quota ledger (see :meth:`Store.reserve_quota`).

    :ivar requests: most reservations in any ``window`` seconds (None: unlimited).
    :ivar tokens: most tokens in any ``window`` seconds (None: unlimited).
    :ivar cost_per_day: most cost per UTC day, counting reservations not yet settled (None: unlimited).
    :ivar window: the sliding window of ``requests`` and ``tokens``, in seconds.
    """

    requests: float | None = None
    tokens: float | None = None
    cost_per_day: float | None = None
    window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("requests", "tokens", "cost_per_day"):
            value = getattr(self, name)
            if value is not None and (
                not _is_real(value) or not math.isfinite(value) or value <= 0
            ):
                raise InvalidInput(f"quota {name} must be a positive number or None, got {value!r}")
        _check_ttl(self.window, "window")


@dataclass(frozen=True)
class QuotaGrant:
    """The outcome of :meth:`Store.reserve_quota`, and a ledger's state (:meth:`Store.quota_state`).

    :ivar granted: whether the reservation was recorded.
    :ivar wait_seconds: 0 when granted, else when enough of the limit should be free again.
    :ivar reason: the limit that refused it: ``"requests"``, ``"tokens"`` or ``"cost"`` (None).
    :ivar requests: reservations in the current window (including this one when granted).
    :ivar tokens: tokens in the current window, reserved or settled.
    :ivar cost_spent: cost settled today (UTC).
    :ivar cost_pending: cost reserved today and not settled yet.
    """

    granted: bool
    wait_seconds: float
    reason: str | None
    requests: float
    tokens: float
    cost_spent: float
    cost_pending: float


#: Dimensions a quota can refuse on, in the order they are checked.
QUOTA_REASONS = ("requests", "tokens", "cost")


class Subscription(ABC):
    """Decoded messages published to one channel, in order. Iterate it, or poll with :meth:`get`."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> Any | None:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None on timeout."""

    @abstractmethod
    def close(self) -> None:
        """Unsubscribe and release the connection; idempotent."""

    def __iter__(self) -> Iterator[Any]:
        while True:
            message = self.get(timeout=None)
            if message is None:  # only after close()
                return
            yield message

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    """A namespaced key/value store shared by every process; see the package docstring."""

    #: How this store turns values into bytes (what :meth:`get_encoded` returns); backends set
    #: their own in ``__init__``.
    codec: Codec = Codec()

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            # An empty prefix would let clear_namespace() wipe keys sluice does not own.
            raise InvalidInput(f"store prefix must be a non-empty string, got {prefix!r}")
        self.prefix = prefix

    # -- plain values --------------------------------------------------------------------------

    @abstractmethod
    def get(self, key: str) -> Any | None:
        """The value stored under ``key``, or None when absent or expired."""

    @abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value``, replacing any previous one; it expires after ``ttl`` seconds if set."""

    @abstractmethod
    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent, atomically; True when it was stored."""

    @abstractmethod
    def delete(self, *keys: str) -> int:
        """Remove the keys (of any kind); return how many existed."""

    @abstractmethod
    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the keys that are present, by key."""

    @abstractmethod
    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item of ``mapping`` atomically, each with the same ``ttl``."""

    # -- encoded values (for callers that keep the bytes: one encode, sizes for free) ----------

    @abstractmethod
    def get_encoded(self, key: str) -> bytes | None:
        """The stored bytes of a value (as :meth:`set` or :meth:`set_encoded` wrote them), or None.

        Raises :class:`~sluice.errors.CodecError` when the key holds something that is not a value.
        """

    @abstractmethod
    def get_many_encoded(self, keys: Iterable[str]) -> dict[str, bytes]:
        """:meth:`get_encoded` of several keys in one round trip, for the keys present."""

    @abstractmethod
    def set_encoded(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store bytes made by this store's codec, as :meth:`set` would store their value."""

    @abstractmethod
    def set_many_encoded(self, mapping: Mapping[str, bytes], ttl: float | None = None) -> None:
        """:meth:`set_encoded` of several keys atomically, in one round trip, with the same
        ``ttl``."""

    @abstractmethod
    def touch_many(self, keys: Iterable[str], ttl: float) -> frozenset[str]:
        """Make the keys present (of any kind) expire ``ttl`` seconds from now, in one round
        trip; returns which keys were present. An absent key stays absent."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None when it is absent or never expires."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds anything (a value, counter, hash or list)."""

    # -- counters (raw integers, not through the codec) ----------------------------------------

    @abstractmethod
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to a counter, return the new value; ``ttl`` applies only on creation."""

    @abstractmethod
    def get_counter(self, key: str) -> int:
        """The counter's value; 0 when absent."""

    @abstractmethod
    def hincr(self, key: str, field: str, amount: int = 1) -> int:
        """Add ``amount`` to one field of a counter hash and return the field's new value."""

    @abstractmethod
    def hincr_drop_zero(self, key: str, field: str, amount: int) -> int:
        """:meth:`hincr`, and a field that reaches 0 is removed in the same atomic step.

        For +1/-1 pairs that may arrive in either order (a message's publish and its start):
        whichever lands second leaves nothing behind.
        """

    @abstractmethod
    def hgetall_counters(self, key: str) -> dict[str, int]:
        """Every field of a counter hash; empty when absent."""

    # -- token bucket --------------------------------------------------------------------------

    def take_token(self, key: str, rate: float, burst: float, tokens: float = 1.0) -> TokenGrant:
        """Take ``tokens`` from bucket ``key`` (refilled at ``rate`` per second up to ``burst``).

        Atomic and shared: every process calling with the same key sees one bucket. A new bucket
        starts full.
        """
        full = self._key(key)
        for name, number in (("rate", rate), ("burst", burst), ("tokens", tokens)):
            if not _is_real(number) or not math.isfinite(number):
                raise InvalidInput(f"{name} must be a finite number, got {number!r}")
        if rate <= 0:
            raise InvalidInput(f"rate must be > 0 tokens per second, got {rate!r}")
        if not 0 < tokens <= burst:
            raise InvalidInput(f"need 0 < tokens <= burst, got tokens={tokens!r} burst={burst!r}")
        return self._take_token(full, float(rate), float(burst), float(tokens))

    @abstractmethod
    def _take_token(self, full_key: str, rate: float, burst: float, tokens: float) -> TokenGrant:
        """Backend part of :meth:`take_token`, with validated arguments and the namespaced key."""

    # -- quota ledgers -------------------------------------------------------------------------

    def reserve_quota(
        self,
        key: str,
        reservation: str,
        quota: Quota,
        *,
        tokens: float,
        cost: float,
        share: float = 1.0,
        lease: float = 600.0,
    ) -> QuotaGrant:
        """Reserve one request of ``tokens`` and ``cost`` against ledger ``key``, atomically.

        Granted only when the window's requests and tokens, and today's spent plus pending cost,
        stay within ``share`` (0 < share <= 1) of each cap after adding it; nothing is recorded when
        refused. A granted reservation holds its amounts until :meth:`settle_quota` replaces them
        with what was really used, :meth:`release_quota` drops them, or ``lease`` seconds pass
        without either (its holder died): then it is dropped too, so nothing leaks. Every process
        using the same key shares one ledger, and one clock (the server's, on Redis).
        """
        full = self._key(key)
        check_key(reservation)
        for name, number in (("tokens", tokens), ("cost", cost)):
            if not _is_real(number) or not math.isfinite(number) or number < 0:
                raise InvalidInput(f"{name} must be a finite number >= 0, got {number!r}")
        if not _is_real(share) or not 0 < share <= 1:
            raise InvalidInput(f"share must be in (0, 1], got {share!r}")
        lease = _check_ttl(lease, "lease")
        return self._reserve_quota(
            full, reservation, quota, float(tokens), float(cost), share, lease
        )

    def settle_quota(
        self, key: str, reservation: str, quota: Quota, *, tokens: float, cost: float
    ) -> None:
        """Replace reservation's amounts with what was used, counted in the window from now.

        The difference goes back to the ledger; the cost moves from pending to spent today. A
        reservation whose lease already lapsed is recorded anew, since the call did happen.
        """
        full = self._key(key)
        check_key(reservation)
        for name, number in (("tokens", tokens), ("cost", cost)):
            if not _is_real(number) or not math.isfinite(number) or number < 0:
                raise InvalidInput(f"{name} must be a finite number >= 0, got {number!r}")
        self._settle_quota(full, reservation, quota, float(tokens), float(cost))

    def release_quota(self, key: str, reservation: str, quota: Quota) -> bool:
        """Drop an unsettled reservation (its call never reached the provider); False if gone."""
        return self._release_quota(self._key(key), check_key(reservation), quota)

    def quota_state(self, key: str, quota: Quota) -> QuotaGrant:
        """The ledger's current usage, as an ungranted :class:`QuotaGrant` with no reason."""
        return self._quota_state(self._key(key), quota)

    @abstractmethod
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
        """Backend part of :meth:`reserve_quota`, with validated arguments."""

    @abstractmethod
    def _settle_quota(
        self, full_key: str, reservation: str, quota: Quota, tokens: float, cost: float
    ) -> None:
        """Backend part of :meth:`settle_quota`."""

    @abstractmethod
    def _release_quota(self, full_key: str, reservation: str, quota: Quota) -> bool:
        """Backend part of :meth:`release_quota`."""

    @abstractmethod
    def _quota_state(self, full_key: str, quota: Quota) -> QuotaGrant:
        """Backend part of :meth:`quota_state`."""

    # -- locks ---------------------------------------------------------------------------------

    def lock(self, name: str, lease: float = 30.0, timeout: float | None = None) -> StoreLock:
        """A lock named ``name`` shared by every process; see :class:`StoreLock`.

        ``timeout`` bounds how long ``with store.lock(...)`` waits (forever when None).
        """
        if timeout is not None and (not _is_real(timeout) or timeout < 0):
            raise InvalidInput(f"timeout must be >= 0 or None, got {timeout!r}")
        full = self._key("lock:" + check_key(name))
        return StoreLock(self, full, _check_ttl(lease, "lease"), timeout)

    @abstractmethod
    def _lock_acquire(self, full_key: str, owner: str, lease: float) -> bool:
        """Take the lock for ``owner`` unless someone holds it (atomic)."""

    @abstractmethod
    def _lock_renew(self, full_key: str, owner: str, lease: float) -> bool:
        """Extend the lease if ``owner`` still holds the lock (atomic compare-and-set)."""

    @abstractmethod
    def _lock_release(self, full_key: str, owner: str) -> bool:
        """Release the lock if ``owner`` still holds it (atomic compare-and-delete)."""

    @abstractmethod
    def _lock_owner(self, full_key: str) -> str | None:
        """The current holder's owner token, or None when the lock is free."""

    # -- durable FIFO lists --------------------------------------------------------------------

    @abstractmethod
    def push(self, key: str, *values: Any) -> int:
        """Append values to the list ``key``; return its new length."""

    @abstractmethod
    def pop_many(self, key: str, count: int) -> list[Any]:
        """Remove and return up to ``count`` items from the front, atomically (no item twice)."""

    @abstractmethod
    def length(self, key: str) -> int:
        """How many items the list ``key`` holds."""

    # -- pub/sub -------------------------------------------------------------------------------

    @property
    @abstractmethod
    def supports_pubsub(self) -> bool:
        """Whether :meth:`publish` and :meth:`subscribe` work on this backend."""

    @abstractmethod
    def publish(self, channel: str, message: Any) -> int:
        """Send ``message`` to every current subscriber of ``channel``; return how many got it."""

    @abstractmethod
    def subscribe(self, channel: str) -> Subscription:
        """Start receiving the messages published to ``channel`` from now on."""

    # -- administration ------------------------------------------------------------------------

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers; never raises."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and file handles; the store must not be used afterwards."""

    @abstractmethod
    def clear_namespace(self) -> int:
        """Delete every key under this store's prefix (and nothing else); return how many."""

    # -- helpers for backends ------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreLock:
    """A leased, owner-checked lock on a :class:`Store`.

    The lease bounds how long a crashed holder blocks others. Only the owner (a random token made
    per lock object) can renew or release it, so a holder whose lease lapsed cannot release the
    lock a new owner took meanwhile. ``with store.lock("name"):`` blocks until acquired and
    releases on exit. The token starts with the holder's :func:`~sluice.processes.process_identity`
    (``pid.starttime/random``), so a store on this machine alone can tell a dead holder at once.
    """

    def __init__(
        self, store: Store, full_key: str, lease: float, timeout: float | None = None
    ) -> None:
        self.store = store
        self.key = full_key
        self.lease = lease
        self.timeout = timeout
        self.owner = f"{process_identity()}/{secrets.token_hex(16)}"
        self._stop_renewal = threading.Event()
        self._renewer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"StoreLock(key={self.key!r}, lease={self.lease})"

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, auto_renew: bool = False
    ) -> bool:
        """Take the lock; wait up to ``timeout`` seconds (forever when None) if ``blocking``.

        With ``auto_renew`` a background thread keeps renewing the lease until :meth:`release`.
        """
        if timeout is not None and (not _is_real(timeout) or timeout < 0):
            raise InvalidInput(f"timeout must be >= 0 or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_MIN
        while not self.store._lock_acquire(self.key, self.owner, self.lease):
            now = time.monotonic()
            if not blocking or (deadline is not None and now >= deadline):
                return False
            # Jitter spreads out waiters so they do not all hit the backend at the same instant.
            pause = random.uniform(delay / 2, delay)
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)
            delay = min(delay * 2, _POLL_MAX)
        if auto_renew:
            self.start_renewal()
        return True

    def renew(self, lease: float | None = None) -> bool:
        """Reset the lease to ``lease`` (default: the lock's) seconds; False if no longer held."""
        lease = self.lease if lease is None else _check_ttl(lease, "lease")
        return self.store._lock_renew(self.key, self.owner, lease)

    def release(self) -> bool:
        """Stop renewal and release the lock; False when this owner no longer held it."""
        self._stop_renewer()
        return self.store._lock_release(self.key, self.owner)

    def held(self) -> bool:
        """Whether this owner holds the lock right now."""
        return self.store._lock_owner(self.key) == self.owner

    def start_renewal(self) -> None:
        """Renew the lease every third of it from a daemon thread until :meth:`release`.

        A lock the store lost (not taken by another owner) is taken back at the next renewal.
        """
        if self._renewer is not None and self._renewer.is_alive():
            return
        self._stop_renewal = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_loop,
            args=(self._stop_renewal,),
            name=f"sluice-lock-renewal:{self.key}",
            daemon=True,
        )
        self._renewer.start()

    def _renew_loop(self, stop: threading.Event) -> None:
        interval = self.lease / 3
        while not stop.wait(interval):
            interval = self.lease / 3
            try:
                if self.renew():
                    continue
                # The key is gone (its lease lapsed over an outage, or a store restarted without
                # it): take it back unless another owner has, so waiters keep waiting for us.
                if self.store._lock_acquire(self.key, self.owner, self.lease):
                    log.warning("lock %s was lost from the store; re-took it", self.key)
                    continue
                log.warning("lock %s was taken by another owner; stopping renewal", self.key)
                return
            except SluiceError as exc:
                # A brief outage should not end renewal: the lease may still be valid next time.
                # Retry soon, to re-take the lock as soon as the store is back should the outage
                # have lost it, before a waiter that saw the outage end takes it over.
                log.warning("could not renew lock %s: %s", self.key, exc)
                interval = min(RETRY_AFTER_OUTAGE, self.lease / 3)

    def _stop_renewer(self) -> None:
        self._stop_renewal.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()

    def __enter__(self) -> StoreLock:
        if not self.acquire(blocking=True, timeout=self.timeout):
            raise BackendUnavailable(
                f"could not acquire lock {self.key!r} within {self.timeout} seconds"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"store keys must be non-empty strings, got {key!r}")
    if "\x00" in key:
        # NUL separates a DiskStore list's name from its item numbers.
        raise InvalidInput(f"store keys must not contain NUL characters, got {key!r}")
    return key


def _check_ttl(ttl: float, name: str = "ttl") -> float:
    if not _is_real(ttl) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidInput(f"{name} must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_ttl(ttl: float | None) -> float | None:
    """Validate an optional ttl: None (never expires) or a positive finite number of seconds."""
    return None if ttl is None else _check_ttl(ttl)


def check_bytes(data: bytes) -> bytes:
    """Validate encoded data: bytes, as the store's codec makes them."""
    if not isinstance(data, bytes):
        raise InvalidInput(f"encoded values must be bytes, got {type(data).__name__}")
    return data


def require_ttl(ttl: float) -> float:
    """Validate a ttl that must be given: a positive finite number of seconds."""
    return _check_ttl(ttl)


def check_amount(amount: int) -> int:
    """Validate a counter increment: an int (bools are refused)."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidInput(f"counter amounts must be integers, got {amount!r}")
    return amount


def check_count(count: int) -> int:
    """Validate a pop count: a positive int."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise InvalidInput(f"count must be a positive integer, got {count!r}")
    return count
