"""The two tiers: look up L1 then L2 (an L2 hit fills L1), and write through both.

Entries are encoded once: a write encodes the envelope, sends those bytes to L2 and keeps them in
L1, which decodes them on the first L1 hit (so an L1 hit returns exactly what an L2 hit would, and a
value never read costs no decode). An L2 entry is used only if it passes
:func:`~sluice.cache.envelope.envelope_problem`, matches the key's fingerprint and has not expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from sluice.cache.envelope import MAX_COST_USD, envelope_problem, make_envelope
from sluice.cache.invalidation import Generations
from sluice.cache.keys import CacheKey
from sluice.cache.l2 import L2RedisCache
from sluice.cache.memory import MISSING, L1MemoryCache
from sluice.cache.policy import CacheConfig
from sluice.cache.stats import CacheStats
from sluice.errors import CodecError, InvalidInput
from sluice.store import Codec

log = logging.getLogger(__name__)
#: What became of a write: in both tiers, refused as too large, not taken by L2, or not sent to
#: L2 since the generations (part of every stored key) cannot be read.
WriteOutcome = Literal["stored", "too_large", "lost", "unkeyed"]


class _Encoded:
    """An L1 value not decoded yet: the bytes this process just wrote to L2."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class TieredLookup:
    """Reads and writes of entries through L1 and L2, counted in ``stats``."""

    def __init__(
        self,
        config: CacheConfig,
        codec: Codec,
        l1: L1MemoryCache,
        l2: L2RedisCache,
        generations: Generations,
        stats: CacheStats,
    ) -> None:
        self.config = config
        self.codec = codec
        self.l1 = l1
        self.l2 = l2
        self.generations = generations
        self.stats = stats

    def lookup(self, content_type: str, key: CacheKey, count: bool = True) -> tuple[bool, Any]:
        """``(found, value)``: L1, then L2 (filling L1). A cached None is found."""
        full = self.generations.full_key(content_type, key.key)
        if full is None:
            if count:
                self.stats.miss(content_type)
            return False, None
        found, value, cost = self._from_l1(full, key)
        tier = "l1_hits"
        if not found:
            tier = "l2_hits"
            found, value, cost = self._accept(
                content_type, full, key, self.l2.get_encoded(content_type, full)
            )
        if count:
            if found:
                self.stats.hit(content_type, tier, cost)
            else:
                self.stats.miss(content_type)
        return found, value

    def lookup_many(self, content_type: str, keys: list[CacheKey]) -> list[Any | None]:
        """One value (None where missing) per key, with one L2 round trip for all L1 misses."""
        return [value for _, value in self.lookup_each(content_type, keys)]

    def lookup_each(self, content_type: str, keys: list[CacheKey]) -> list[tuple[bool, Any]]:
        """``(found, value)`` per key, counted like :meth:`lookup`, with one L2 round trip for
        all L1 misses. A cached None is found."""
        results: list[tuple[bool, Any]] = [(False, None)] * len(keys)
        fulls = [self.generations.full_key(content_type, k.key) for k in keys]
        pending: list[tuple[int, str]] = []
        for i, (full, key) in enumerate(zip(fulls, keys, strict=True)):
            if full is None:
                self.stats.miss(content_type)
                continue
            found, value, cost = self._from_l1(full, key)
            if found:
                self.stats.hit(content_type, "l1_hits", cost)
                results[i] = (True, value)
            else:
                pending.append((i, full))
        if pending:
            stored = self.l2.get_many_encoded(content_type, list({full for _, full in pending}))
            for i, full in pending:
                found, value, cost = self._accept(content_type, full, keys[i], stored.get(full))
                if found:
                    self.stats.hit(content_type, "l2_hits", cost)
                    results[i] = (True, value)
                else:
                    self.stats.miss(content_type)
        return results

    def put(
        self,
        content_type: str,
        key: CacheKey,
        value: Any,
        ttl: float | None = None,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store ``value`` in L1 and L2; False when too large or not written to L2 (counted).

        Raises :class:`InvalidInput` when the value cannot be encoded: an unstorable value is the
        caller's bug and must not vanish silently.
        """
        return self.write(content_type, key, value, ttl, model, usage) == "stored"

    def write(
        self,
        content_type: str,
        key: CacheKey,
        value: Any,
        ttl: float | None = None,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
        *,
        insist: bool = False,
    ) -> WriteOutcome:
        """:meth:`put`, telling why a value was not stored: ``too_large``, ``unkeyed`` or ``lost``
        (the store did not take it, so a retry may). ``insist`` writes past an open circuit
        (:meth:`L2RedisCache.set_encoded`)."""
        ttl = self.config.ttl_for(content_type) if ttl is None else ttl
        if not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
            raise InvalidInput(f"ttl must be a positive number of seconds, got {ttl!r}")
        cost = self._cost(model, usage)
        envelope = make_envelope(key.fingerprint, value, time.time() + ttl, cost)
        try:
            encoded = self.codec.encode(envelope)
        except CodecError as exc:
            raise InvalidInput(f"cannot cache this {content_type} value: {exc}") from None
        if len(encoded) > self.config.max_entry_bytes:
            self.stats.incr(content_type, "too_large")
            return "too_large"
        full = self.generations.full_key(content_type, key.key)
        if full is None:  # generations unreadable: no key under which a reader would find it
            self._lost(content_type, "the generation counters cannot be read")
            return "unkeyed"
        self.l1.set(
            full,
            (_Encoded(encoded), key.fingerprint, cost),
            min(ttl, self.config.l1_max_ttl),
            len(encoded),
        )
        if not self.l2.set_encoded(content_type, full, encoded, ttl, insist=insist):
            self._lost(content_type, "L2 did not take it")
            return "lost"
        self.stats.incr(content_type, "sets")
        return "stored"

    def _cost(self, model: str | None, usage: Mapping[str, Any] | None) -> float:
        """What the call cost, within what an entry may claim (a provider's absurd token counts
        must not make its entry unreadable); the per-call price when usage is not numbers."""
        try:
            cost = self.config.cost_usd(model, usage)
        except (TypeError, ValueError, AttributeError):
            return self.config.price_per_call_usd
        return min(cost, MAX_COST_USD) if cost >= 0 else self.config.price_per_call_usd

    def _lost(self, content_type: str, why: str) -> None:
        # Kept in this process's L1 only: other processes (and the next run) will recompute it.
        self.stats.incr(content_type, "lost_writes")
        log.warning("AI cache write lost (%s): other processes will miss it", why)

    def _from_l1(self, full: str, key: CacheKey) -> tuple[bool, Any, float]:
        entry = self.l1.get(full)
        if entry is MISSING or entry[1] != key.fingerprint:
            return False, None, 0.0
        value = entry[0]
        if type(value) is _Encoded:
            try:
                value = self.codec.decode(value.data)["v"]
            except CodecError:  # over the decoder's bounds: no process can read it back
                self.l1.delete(full)
                return False, None, 0.0
            self.l1.replace(full, (value, entry[1], entry[2]))
        return True, value, entry[2]

    def _accept(
        self, content_type: str, full: str, key: CacheKey, data: bytes | None
    ) -> tuple[bool, Any, float]:
        """``(found, value, cost)`` of bytes read from L2, filling L1; never raises."""
        if data is None:
            return False, None, 0.0
        now = time.time()
        try:
            envelope = self.codec.decode(data)
        except CodecError as exc:
            problem: str | None = str(exc)
        else:
            problem = envelope_problem(envelope, now)
        if problem is not None:
            # A foreign writer's value, or one of ours damaged: a counted miss, never an error.
            self.stats.incr(content_type, "corrupt")
            log.warning("ignoring a corrupt AI cache entry at %s: %s", full, problem)
            return False, None, 0.0
        fingerprint = key.fingerprint
        if envelope["fp"] != fingerprint:
            return False, None, 0.0  # a digest collision: another input's entry
        remaining = envelope["exp"] - now
        if remaining <= 0:
            return False, None, 0.0  # expired, though the store has not dropped it yet
        value, cost = envelope["v"], float(envelope["cost"])
        l1_ttl = self.config.l1_max_ttl
        self.l1.set(
            full, (value, fingerprint, cost), l1_ttl if remaining > l1_ttl else remaining, len(data)
        )
        return True, value, cost
