"""The Redis backend: one server shared by every host and process.

Multi-step operations are Lua scripts so Redis runs them atomically, and the token bucket reads the
server's clock (``TIME``) so every process agrees on time. Every redis-py error surfaces as
:class:`~sluice.errors.BackendUnavailable` naming the server, never its password.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import PubSub
from redis.connection import AbstractConnection
from redis.retry import Retry

from sluice.errors import BackendTimeout, BackendUnavailable, InvalidInput
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
from sluice.store.quota import DAY, LEDGER_TTL, PENDING_RECHECK

# ARGV: rate, burst, tokens. State: a hash {tokens, ts (microseconds of the server clock)}.
# Numbers go back as strings because Redis truncates Lua numbers to integers.
_BUCKET_SCRIPT = """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000000 * rate)
local granted, wait = 0, 0
if tokens >= want then
  tokens = tokens - want
  granted = 1
else
  wait = (want - tokens) / rate
end
local function num(x) return string.format('%.17g', x) end
redis.call('HSET', KEYS[1], 'tokens', num(tokens), 'ts', num(now))
redis.call('PEXPIRE', KEYS[1], math.max(1000, math.ceil(burst / rate * 2000)))
return {granted, num(wait), num(tokens)}
"""

# ARGV: amount, ttl in ms (0: none). The ttl applies only when this call creates the counter.
_INCR = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

_HINCR_DROP_ZERO = """
local value = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if value == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
"""
# The quota ledger (sluice.store.quota.Ledger in Lua): a hash of "r:<id>" -> "stamp until tokens
# cost done restricted", plus "day", "spent" and the refusal cursors "q0"/"q1".
# ARGV: op (reserve|settle|release|state), id, window, caps (requests, tokens, cost per day; ""
# for none), tokens, cost, share, lease, day, recheck, ttl ms.
# Reply: granted, wait, reason, requests, tokens, spent, pending (numbers as strings).
_QUOTA_SCRIPT = """
local op, rid, window = ARGV[1], 'r:' .. ARGV[2], tonumber(ARGV[3])
local cap_requests, cap_tokens, cap_cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local want_tokens, want_cost, share = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local lease, day_seconds, recheck = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function num(x) return string.format('%.17g', x) end
local today = math.floor(now / day_seconds)
local raw = redis.call('HGETALL', KEYS[1])
local entries, day, spent, cursors = {}, nil, 0, {}
for i = 1, #raw, 2 do
  local name, value = raw[i], raw[i + 1]
  if name == 'day' then day = tonumber(value)
  elseif name == 'spent' then spent = tonumber(value)
  elseif name == 'q0' or name == 'q1' then cursors[name] = tonumber(value)
  else
    local e = {}
    for part in string.gmatch(value, '%S+') do e[#e + 1] = tonumber(part) end
    local live
    if e[5] == 1 then live = e[1] + window > now else live = e[2] > now end
    if live then entries[name] = e else redis.call('HDEL', KEYS[1], name) end
  end
end
if day ~= today then day, spent = today, 0 end
local function totals()
  local n, tokens, pending = 0, 0, 0
  for _, e in pairs(entries) do
    n = n + 1
    tokens = tokens + e[3]
    if e[5] ~= 1 then pending = pending + e[4] end
  end
  return n, tokens, pending
end
local function used(column, only_restricted)
  local sum = 0
  for _, e in pairs(entries) do
    if e[6] == 1 or not only_restricted then
      if column then sum = sum + e[column] else sum = sum + 1 end
    end
  end
  return sum
end
local function save()
  redis.call('HSET', KEYS[1], 'day', num(day), 'spent', num(spent))
  redis.call('PEXPIRE', KEYS[1], ARGV[13])
end
local function window_wait(excess, column, only_restricted)
  local releases = {}
  for _, e in pairs(entries) do
    if e[6] == 1 or not only_restricted then
      local at = now + window
      if e[5] == 1 then at = e[1] + window end
      local amount = 1
      if column then amount = e[column] end
      releases[#releases + 1] = {at, amount}
    end
  end
  table.sort(releases, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, r in ipairs(releases) do
    freed = freed + r[2]
    if freed >= excess then return math.max(0, r[1] - now) end
  end
  return window
end
local function reply(granted, wait, reason)
  local n, tokens, pending = totals()
  return {granted, num(wait), reason, num(n), num(tokens), num(spent), num(pending)}
end
if op == 'state' then
  return reply(0, 0, '')
elseif op == 'release' then
  local e = entries[rid]
  if e == nil or e[5] == 1 then return reply(0, 0, '') end
  entries[rid] = nil
  redis.call('HDEL', KEYS[1], rid)
  save()
  return reply(1, 0, '')
elseif op == 'settle' then
  -- A reservation that lapsed meanwhile is unknown: count it as restricted (the cautious side).
  local restricted = 1
  if entries[rid] then restricted = entries[rid][6] end
  entries[rid] = {now, 0, want_tokens, 0, 1, restricted}
  spent = spent + want_cost
  redis.call('HSET', KEYS[1], rid, num(now) .. ' 0 ' .. num(want_tokens) .. ' 0 1 ' .. restricted)
  save()
  return reply(1, 0, '')
end
local restricted = 0
if share < 1 then restricted = 1 end
local checks = {{'requests', cap_requests, 1, nil}, {'tokens', cap_tokens, want_tokens, 3}}
for _, check in ipairs(checks) do
  local reason, cap, amount, column = check[1], check[2], check[3], check[4]
  if cap then
    local limits = {{cap, false}}
    if restricted == 1 then limits[2] = {cap * share, true} end
    for _, limit in ipairs(limits) do
      local held = used(column, limit[2])
      if held + amount > limit[1] then
        local wait = window_wait(held + amount - limit[1], column, limit[2])
        local cursor = 'q' .. restricted
        local at = math.max(now + wait, cursors[cursor] or 0)
        redis.call('HSET', KEYS[1], cursor, num(at + amount * window / limit[1]))
        save()
        return reply(0, at - now, reason)
      end
    end
  end
end
local n, tokens, pending = totals()
if cap_cost then
  local budget = cap_cost * share
  if spent + want_cost > budget then
    return reply(0, (day + 1) * day_seconds - now, 'cost')
  end
  if spent + pending + want_cost > budget then return reply(0, recheck, 'cost') end
end
entries[rid] = {now, now + lease, want_tokens, want_cost, 0, restricted}
redis.call('HSET', KEYS[1], rid, num(now) .. ' ' .. num(now + lease) .. ' ' .. num(want_tokens)
  .. ' ' .. num(want_cost) .. ' 0 ' .. restricted)
save()
return reply(1, 0, '')
"""

# Idempotent for its owner: when a reply is lost (a timeout) redis-py retries the command, and a
# plain SET NX would then report the lock we just took as someone else's, leaving us waiting for
# ourselves until the lease or the caller's patience ran out.
_LOCK_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_POP_MANY = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
end
return items
"""

# A blocked Subscription.get(None) wakes this often to notice close() and beat socket_timeout.
_SUBSCRIBE_POLL = 1.0


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStore(Store):
    """A :class:`Store` on a Redis server.

    :param url: ``redis://[user:password@]host:port/db``, ``rediss://...`` or ``unix:///path``.
    :param prefix: prepended to every key.
    :param codec: how values are serialized (default: msgpack, compressed from 1 KiB).
    :param socket_timeout: seconds to wait for the server before :class:`BackendUnavailable`.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "sluice:",
        codec: Codec | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        super().__init__(prefix)
        self.codec = codec or Codec()
        parts = urlsplit(url)
        self._password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            self.location = parts.path
        else:
            self.location = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        try:
            # Any: redis-py types every command as "Awaitable | result" (shared with asyncio).
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # Two quick retries ride out a restart or failover blip. A retried command may run
                # twice if only the reply was lost; that is rarer than the blips it hides.
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
                # Probe connections idle this long before reuse so a dead one is not handed out.
                health_check_interval=30,
            )
        except ValueError as exc:
            raise InvalidInput(f"invalid Redis URL for {self.location}: {exc}") from None
        self._take_token_script = self._client.register_script(_BUCKET_SCRIPT)
        self._incr_script = self._client.register_script(_INCR)
        self._hincr_drop_zero_script = self._client.register_script(_HINCR_DROP_ZERO)
        self._renew_script = self._client.register_script(_LOCK_RENEW)
        self._release_script = self._client.register_script(_LOCK_RELEASE)
        self._acquire_script = self._client.register_script(_LOCK_ACQUIRE)
        self._pop_script = self._client.register_script(_POP_MANY)
        self._quota_script = self._client.register_script(_QUOTA_SCRIPT)
        # One connection per thread for the value hot paths (see _direct).
        self._local = threading.local()
        self._dedicated: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r}, prefix={self.prefix!r})"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: redis.RedisError) -> InvalidInput | BackendUnavailable:
        # These two are caller mistakes (a counter op on a value, a list op on a hash, ...),
        # not outages; every other error reply means the server cannot serve us.
        if isinstance(exc, redis.ResponseError) and (
            str(exc).startswith("WRONGTYPE") or "not an integer" in str(exc)
        ):
            return InvalidInput(f"key holds a different kind of value: {exc}")
        if isinstance(exc, redis.TimeoutError):
            return self._unavailable(exc, BackendTimeout)
        return self._unavailable(exc)

    def _unavailable(
        self, exc: Exception, kind: type[BackendUnavailable] = BackendUnavailable
    ) -> BackendUnavailable:
        detail = str(exc)
        if self._password:
            detail = detail.replace(self._password, "***")
        return kind(f"Redis at {self.location} failed: {type(exc).__name__}: {detail}")

    def _direct(self, *command: str | bytes | int) -> Any:
        """Run one command on this thread's own connection, with the client's retries.

        The pool's per-command checkout (locks, a readiness poll, release events) costs more than
        a small GET or SET; a thread's connection is never shared, so it needs none of that. A
        failed or interrupted command drops the connection, so no half-read reply is left on it.
        """
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            # A forked child never touches the parent's socket: it opens its own.
            pool = self._client.connection_pool
            conn = local.conn = pool.connection_class(**pool.connection_kwargs)
            local.pid = os.getpid()
            self._dedicated.add(conn)

        def call() -> Any:
            conn.send_command(*command)
            return conn.read_response()

        try:
            return conn.retry.call_with_retry(call, lambda _: conn.disconnect())
        except redis.ResponseError as exc:
            raise self._translate(exc) from None  # a reply: the connection is in sync
        except redis.RedisError as exc:
            conn.disconnect()
            raise self._translate(exc) from None
        except BaseException:
            conn.disconnect()
            raise

    def _decode(self, data: bytes | None) -> Any | None:
        return None if data is None else self.codec.decode(data)

    # -- plain values --------------------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        """See :meth:`Store.get`."""
        full = self._key(key)
        with self._guard():
            data = self._client.get(full)
        return self._decode(data)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """See :meth:`Store.set`."""
        full, ttl = self._key(key), check_ttl(ttl)
        data = self.codec.encode(value)
        with self._guard():
            self._client.set(full, data, px=None if ttl is None else _ms(ttl))

    def get_encoded(self, key: str) -> bytes | None:
        """See :meth:`Store.get_encoded`."""
        data: bytes | None = self._direct("GET", self._key(key))
        return data

    def get_many_encoded(self, keys: Iterable[str]) -> dict[str, bytes]:
        """See :meth:`Store.get_many_encoded`."""
        names = list(keys)
        if not names:
            return {}
        with self._guard():
            values = self._client.mget([self._key(key) for key in names])
        return {key: data for key, data in zip(names, values, strict=True) if data is not None}

    def set_encoded(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """See :meth:`Store.set_encoded`."""
        full, ttl, data = self._key(key), check_ttl(ttl), check_bytes(data)
        if ttl is None:
            self._direct("SET", full, data)
        else:
            self._direct("SET", full, data, "PX", _ms(ttl))

    def set_many_encoded(self, mapping: Mapping[str, bytes], ttl: float | None = None) -> None:
        """See :meth:`Store.set_many_encoded`."""
        ttl = check_ttl(ttl)
        encoded = {self._key(key): check_bytes(data) for key, data in mapping.items()}
        if not encoded:
            return
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            for full, data in encoded.items():
                pipe.set(full, data, px=None if ttl is None else _ms(ttl))
            pipe.execute()

    def touch_many(self, keys: Iterable[str], ttl: float) -> frozenset[str]:
        """See :meth:`Store.touch_many`."""
        names, ms = list(keys), _ms(require_ttl(ttl))
        if not names:
            return frozenset()
        with self._guard():
            pipe = self._client.pipeline(transaction=False)
            for key in names:
                pipe.pexpire(self._key(key), ms)
            present = pipe.execute()
        return frozenset(key for key, found in zip(names, present, strict=True) if found)

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """See :meth:`Store.add`."""
        full, ttl = self._key(key), check_ttl(ttl)
        data = self.codec.encode(value)
        with self._guard():
            return bool(self._client.set(full, data, nx=True, px=None if ttl is None else _ms(ttl)))

    def delete(self, *keys: str) -> int:
        """See :meth:`Store.delete`."""
        if not keys:
            return 0
        full = [self._key(key) for key in keys]
        with self._guard():
            return int(self._client.delete(*full))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """See :meth:`Store.get_many`."""
        names = list(keys)
        if not names:
            return {}
        full = [self._key(key) for key in names]
        with self._guard():
            values = self._client.mget(full)
        return {
            key: self.codec.decode(data)
            for key, data in zip(names, values, strict=True)
            if data is not None
        }

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """See :meth:`Store.set_many`."""
        self.set_many_encoded({k: self.codec.encode(v) for k, v in mapping.items()}, ttl)

    def ttl(self, key: str) -> float | None:
        """See :meth:`Store.ttl`."""
        full = self._key(key)
        with self._guard():
            remaining = int(self._client.pttl(full))
        # -2: no such key; -1: no expiry.
        return remaining / 1000 if remaining >= 0 else None

    def exists(self, key: str) -> bool:
        """See :meth:`Store.exists`."""
        full = self._key(key)
        with self._guard():
            return bool(self._client.exists(full))

    # -- counters ------------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """See :meth:`Store.incr`."""
        full, amount, ttl = self._key(key), check_amount(amount), check_ttl(ttl)
        with self._guard():
            return int(
                self._incr_script(keys=[full], args=[amount, 0 if ttl is None else _ms(ttl)])
            )

    def get_counter(self, key: str) -> int:
        """See :meth:`Store.get_counter`."""
        full = self._key(key)
        with self._guard():
            raw = self._client.get(full)
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError:
            raise InvalidInput(f"key {key!r} holds a value, not a counter") from None

    def hincr(self, key: str, field: str, amount: int = 1) -> int:
        """See :meth:`Store.hincr`."""
        full, field, amount = self._key(key), check_key(field), check_amount(amount)
        with self._guard():
            return int(self._client.hincrby(full, field, amount))

    def hincr_drop_zero(self, key: str, field: str, amount: int) -> int:
        """See :meth:`Store.hincr_drop_zero`."""
        full, field, amount = self._key(key), check_key(field), check_amount(amount)
        with self._guard():
            return int(self._hincr_drop_zero_script(keys=[full], args=[field, amount]))

    def hgetall_counters(self, key: str) -> dict[str, int]:
        """See :meth:`Store.hgetall_counters`."""
        full = self._key(key)
        with self._guard():
            raw = self._client.hgetall(full)
        return {name.decode(): int(value) for name, value in raw.items()}

    def _take_token(self, full_key: str, rate: float, burst: float, tokens: float) -> TokenGrant:
        with self._guard():
            granted, wait, remaining = self._take_token_script(
                keys=[full_key], args=[repr(rate), repr(burst), repr(tokens)]
            )
        return TokenGrant(bool(granted), float(wait), float(remaining))

    # -- quota ledgers -------------------------------------------------------------------------

    def _quota(
        self,
        op: str,
        full_key: str,
        reservation: str,
        quota: Quota,
        tokens: float = 0.0,
        cost: float = 0.0,
        share: float = 1.0,
        lease: float = 1.0,
    ) -> QuotaGrant:
        caps = [
            "" if cap is None else repr(float(cap))
            for cap in (quota.requests, quota.tokens, quota.cost_per_day)
        ]
        args = [op, reservation, repr(quota.window), *caps, repr(tokens), repr(cost)]
        args += [repr(share), repr(lease), repr(DAY), repr(PENDING_RECHECK), str(_ms(LEDGER_TTL))]
        with self._guard():
            granted, wait, reason, requests, used, spent, pending = self._quota_script(
                keys=[full_key], args=args
            )
        return QuotaGrant(
            granted=bool(granted),
            wait_seconds=float(wait),
            reason=(reason.decode() if isinstance(reason, bytes) else reason) or None,
            requests=float(requests),
            tokens=float(used),
            cost_spent=float(spent),
            cost_pending=float(pending),
        )

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
        return self._quota("reserve", full_key, reservation, quota, tokens, cost, share, lease)

    def _settle_quota(
        self, full_key: str, reservation: str, quota: Quota, tokens: float, cost: float
    ) -> None:
        self._quota("settle", full_key, reservation, quota, tokens, cost)

    def _release_quota(self, full_key: str, reservation: str, quota: Quota) -> bool:
        return self._quota("release", full_key, reservation, quota).granted

    def _quota_state(self, full_key: str, quota: Quota) -> QuotaGrant:
        return self._quota("state", full_key, "-", quota)

    # -- locks ---------------------------------------------------------------------------------

    def _lock_acquire(self, full_key: str, owner: str, lease: float) -> bool:
        with self._guard():
            return bool(self._acquire_script(keys=[full_key], args=[owner, _ms(lease)]))

    def _lock_renew(self, full_key: str, owner: str, lease: float) -> bool:
        with self._guard():
            return bool(self._renew_script(keys=[full_key], args=[owner, _ms(lease)]))

    def _lock_release(self, full_key: str, owner: str) -> bool:
        with self._guard():
            return bool(self._release_script(keys=[full_key], args=[owner]))

    def _lock_owner(self, full_key: str) -> str | None:
        with self._guard():
            raw = self._client.get(full_key)
        return None if raw is None else raw.decode()

    # -- lists ---------------------------------------------------------------------------------

    def push(self, key: str, *values: Any) -> int:
        """See :meth:`Store.push`."""
        full = self._key(key)
        encoded = [self.codec.encode(value) for value in values]
        with self._guard():
            if not encoded:
                return int(self._client.llen(full))
            return int(self._client.rpush(full, *encoded))

    def pop_many(self, key: str, count: int) -> list[Any]:
        """See :meth:`Store.pop_many`."""
        full, count = self._key(key), check_count(count)
        with self._guard():
            items = self._pop_script(keys=[full], args=[count])
        return [self.codec.decode(item) for item in items]

    def length(self, key: str) -> int:
        """See :meth:`Store.length`."""
        full = self._key(key)
        with self._guard():
            return int(self._client.llen(full))

    # -- pub/sub -------------------------------------------------------------------------------

    @property
    def supports_pubsub(self) -> bool:
        """Always True: Redis has pub/sub."""
        return True

    def publish(self, channel: str, message: Any) -> int:
        """See :meth:`Store.publish`."""
        full = self._key(channel)
        data = self.codec.encode(message)
        with self._guard():
            return int(self._client.publish(full, data))

    def subscribe(self, channel: str) -> Subscription:
        """See :meth:`Store.subscribe`."""
        full = self._key(channel)
        with self._guard():
            return RedisSubscription(self, self._client.pubsub(), full)

    # -- administration ------------------------------------------------------------------------

    def ping(self) -> bool:
        """See :meth:`Store.ping`."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        """See :meth:`Store.close`."""
        for conn in list(self._dedicated):
            conn.disconnect()
        self._client.close()

    def clear_namespace(self) -> int:
        """See :meth:`Store.clear_namespace`; SCAN-based, so it never blocks the server."""
        deleted = 0
        with self._guard():
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    deleted += int(self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(self._client.unlink(*batch))
        return deleted


class RedisSubscription(Subscription):
    """Messages on one Redis channel; created by :meth:`RedisStore.subscribe`."""

    def __init__(self, store: RedisStore, pubsub: PubSub, channel: str) -> None:
        self._store = store
        self._pubsub = pubsub
        self._closed = False
        pubsub.subscribe(channel)
        # Wait for the server's confirmation, so a message published right after subscribe()
        # returns is not missed.
        deadline = time.monotonic() + 5.0
        while True:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                return
            if time.monotonic() >= deadline:
                pubsub.close()
                raise BackendUnavailable(
                    f"Redis at {store.location} did not confirm the subscription to {channel!r}"
                )

    def get(self, timeout: float | None = None) -> Any | None:
        """See :meth:`Subscription.get`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._store._guard():
            while not self._closed:
                wait = _SUBSCRIBE_POLL
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                message = self._pubsub.get_message(timeout=wait)
                if message is not None and message["type"] == "message":
                    return self._store.codec.decode(message["data"])
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        return None

    def close(self) -> None:
        """See :meth:`Subscription.close`."""
        if not self._closed:
            self._closed = True
            self._pubsub.close()
