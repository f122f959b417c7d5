"""kombu's Redis transport, taking a message off its queue and recording it as unacknowledged at once.

kombu takes a message with BRPOP and records it as unacknowledged (the ZADD and HSET that let another
worker restore it after the visibility timeout) only once it has read the reply. Until then the
message exists nowhere but in that reply: kombu even leaves a reply unread while the worker's
prefetch is full. A worker SIGKILLed in that window, or a broker that drops out before the
registration, loses the message for good (the redelivery drill lost one file in 40, the
broker-restart drill one in 160).

Here a Lua script pops the first message of the consumer's lists, in kombu's order (priority, then
the fair queue cycle), and records it in the same atomic step: a message is always either queued or
restorable. A script cannot block, so a consumer that found every list empty waits on a doorbell:
each publish through this transport pushes a token onto its queue's bell list, and the idle
consumer BRPOPs the bells of its queues. Messages from producers that do not ring (another app,
a restore after the visibility timeout) are found by the next take, at most ``brpop_timeout``
(1 s) later. Reliable fetchers elsewhere make the same trade (Sidekiq Pro's ``super_fetch`` polls,
as an atomic move cannot wait on several lists).

An entry on a queue's list that kombu could not deliver, restore or reject (anything but a kombu
envelope: anyone with write access to Redis can push one, and a stock worker stops on it with
"Unrecoverable error") is taken the same way, as a message whose body is the entry's raw bytes under
a content type no worker accepts, so that the worker's consumer dead-letters it raw
(:mod:`sluice.workers.poison`).

``celeryconfig`` makes this the transport of ``redis://`` and ``rediss://`` URLs in the processes that
load it (kombu's alias table): the URL, and so every tool reading it (Flower, ``celery inspect``,
celery-exporter), stays as it is, and the queues keep kombu's layout.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from sluice.workers.entries import UNREADABLE_ENTRY, deliverable, unreadable_entry

#: KEYS: the unacked hash, the unacked index, then the lists to take from in order. ARGV: the time,
#: a delivery tag for an entry that is no message, then the queue of each list. Returns {queue,
#: message, delivery tag}, the message recorded as unacknowledged under that tag. An entry that is no
#: message kombu can deliver, restore and reject (the rules of :func:`~sluice.workers.entries.deliverable`)
#: becomes :func:`~sluice.workers.entries.unreadable_entry` first: its raw bytes, base64.
TAKE = """
local function text(v) return v == nil or type(v) == 'string' end
local function usable(m)
  if type(m) ~= 'table' or type(m.headers) ~= 'table' or m.headers[1] ~= nil then return false end
  local p = m.properties
  if type(p) ~= 'table' or type(p.delivery_tag) ~= 'string' then return false end
  local info, body, enc = p.delivery_info, m.body, p.body_encoding
  if type(info) ~= 'table' or type(info.exchange) ~= 'string'
      or type(info.routing_key) ~= 'string' then
    return false
  end
  if not text(body) or not text(m['content-type']) or not text(m['content-encoding']) then
    return false
  end
  if enc == 'base64' then
    -- The alphabet is checked in Python (deliverable): a scan here cost 2.5 ms of Redis per take.
    return body == nil or #body % 4 == 0
  end
  return enc == nil or enc == 'utf-8'
end
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d = {math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64}
    out[#out + 1] = B64:sub(d[1] + 1, d[1] + 1) .. B64:sub(d[2] + 1, d[2] + 1)
      .. (b and B64:sub(d[3] + 1, d[3] + 1) or '=') .. (c and B64:sub(d[4] + 1, d[4] + 1) or '=')
  end
  return table.concat(out)
end
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, m = pcall(cjson.decode, item)
    local tag, exchange, routing_key = ARGV[2], '', ARGV[i]
    if ok and usable(m) then
      local info = m.properties.delivery_info
      tag, exchange, routing_key = m.properties.delivery_tag, info.exchange, info.routing_key
    else
      item = cjson.encode({
        body = base64(item), ['content-type'] = '$UNREADABLE', ['content-encoding'] = 'binary',
        headers = {}, properties = {body_encoding = 'base64', delivery_tag = tag, priority = 0,
                                    delivery_info = {exchange = '', routing_key = routing_key}}})
    end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(exchange) .. ','
      .. cjson.encode(routing_key) .. ']')
    return {ARGV[i], item, tag}
  end
end
return false
""".replace("$UNREADABLE", UNREADABLE_ENTRY)

#: KEYS: a bell list. ARGV: how many tokens it keeps (a consumer needs one to wake).
RING = """
redis.call('LPUSH', KEYS[1], '1')
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return 1
"""

#: Tokens a bell keeps while nobody waits: enough to wake that many idle consumers at once.
BELL_TOKENS = 64


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        # The take script has recorded it as unacknowledged already.
        virtual.QoS.append(self, message, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS
    #: The last take found every list empty: wait on the bells before taking again.
    _idle = False
    # kombu's own state of the command in flight, typed for what is stored in it.
    _in_poll: Any = False
    _brpop_sent_at: Any = None

    def _key(self, name: str) -> str:
        # EVAL and a raw send_command are not prefixed by kombu's client: prefix here.
        return f"{self.global_keyprefix}{name}"

    def _bell(self, queue: str) -> str:
        return self._key(f"_sluice.bell.{queue}")

    def _take_command(self, queues: list[tuple[str, str]]) -> tuple[Any, ...]:
        """The take script's call for ``(queue, list)`` pairs, in the order to take from."""
        keys = [self._key(self.unacked_key), self._key(self.unacked_index_key)]
        keys += [self._key(name) for _, name in queues]
        names = [queue for queue, _ in queues]
        return ("EVAL", TAKE, len(keys), *keys, time.time(), uuid.uuid4().hex, *names)

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._idle:
            wait = timeout or self.brpop_timeout or 1
            command: tuple[Any, ...] = ("BRPOP", *(self._bell(q) for q in queues), wait)
        else:
            pairs = [(q, self._q_for_pri(q, pri)) for pri in self.priority_steps for q in queues]
            command = self._take_command(pairs)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        waited, self._idle = self._idle, False
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "BRPOP" if waited else "EVAL", **options
                )
            except self.connection_errors:
                # Disconnect so that the next poll reconnects (as kombu does).
                self.client.connection.disconnect()
                raise
            if waited or not reply:
                # A bell rang, or the wait timed out: take next. Nothing to take: wait next.
                self._idle = not waited
                raise virtual.Empty()
            dest = self._hand_over(reply)
            self._queue_cycle.rotate(dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _hand_over(self, reply: list[Any]) -> str:
        """Deliver a taken message to its consumer; returns its queue."""
        queue, payload = self._taken(reply)
        self.connection._deliver(payload, queue)
        return queue

    def _taken(self, reply: list[Any]) -> tuple[str, Any]:
        """The take script's queue and message (already recorded as unacknowledged)."""
        queue, item, tag = (bytes_to_str(part) for part in reply)
        try:
            payload = loads(item)
        except (ValueError, RecursionError):
            payload = None  # nested deeper than Python's decoder goes (Lua's read it)
        if deliverable(payload):
            return queue, payload
        # Recorded as is, but no message after all: as an unreadable entry, the worker
        # dead-letters it instead of dying on it.
        wrapped = unreadable_entry(reply[1], tag, queue)
        with self.conn_or_acquire() as client:
            client.hset(self.unacked_key, tag, dumps([wrapped, "", queue]))
        return queue, wrapped

    def _get(self, queue: str, timeout: Any = None) -> Any:
        pairs = [(queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:
            reply = client.execute_command(*self._take_command(pairs))
            self._maybe_update_queues_expire(client, queue)
        if not reply:
            raise virtual.Empty()
        return self._taken(reply)[1]

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        ring = ("EVAL", RING, 1, self._bell(queue), BELL_TOKENS)
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:
            super()._put(queue, message, _publish_batch=batch, **kwargs)
            batch.add("execute_command", *ring)
            return
        # The message and its bell in one round trip, through kombu's own batch path (its keys,
        # priority lists and queue expiry).
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            super()._put(queue, message, _publish_batch=_PipelineBatch(pipe), **kwargs)
            pipe.execute_command(*ring)
            pipe.execute()


class _PipelineBatch:
    """kombu's publish-batch interface (``add``) over a redis-py pipeline."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def add(self, name: str, *args: Any) -> None:
        getattr(self.pipe, name)(*args)


class Transport(redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """Make ``redis://`` and ``rediss://`` connections of this process use :class:`Transport`."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
