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

``celeryconfig`` makes this the transport of ``redis://`` and ``rediss://`` URLs in the processes that
load it (kombu's alias table): the URL, and so every tool reading it (Flower, ``celery inspect``,
celery-exporter), stays as it is, and the queues keep kombu's layout.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

#: KEYS: the unacked hash, the unacked index, then the lists to take from in order. ARGV: the time.
#: Returns {list, message, delivery tag}; the tag is false when the message could not be read here
#: (it is then delivered, and registered, the way kombu does it).
TAKE = """
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    local props = ok and type(message) == 'table' and message.properties
    local tag = type(props) == 'table' and props.delivery_tag
    local info = type(props) == 'table' and props.delivery_info
    if type(tag) == 'string' and type(info) == 'table' then
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info.exchange or '')
        .. ',' .. cjson.encode(info.routing_key or '') .. ']')
      return {KEYS[i], item, tag}
    end
    return {KEYS[i], item, false}
  end
end
return false
"""

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
        if delivery_tag == self.channel.registered_tag:
            # The take script has recorded it as unacknowledged already.
            self.channel.registered_tag = None
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS
    #: The delivery tag of the message being handed over that the take script recorded.
    registered_tag: str | None = None
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

    def _take_command(self, lists: list[str]) -> tuple[Any, ...]:
        keys = [self._key(self.unacked_key), self._key(self.unacked_index_key), *lists]
        return ("EVAL", TAKE, len(keys), *keys, time.time())

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._idle:
            wait = timeout or self.brpop_timeout or 1
            command: tuple[Any, ...] = ("BRPOP", *(self._bell(q) for q in queues), wait)
        else:
            lists = [
                self._key(self._q_for_pri(q, pri)) for pri in self.priority_steps for q in queues
            ]
            command = self._take_command(lists)
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
        key, item, tag = reply
        dest = bytes_to_str(key)[len(self.global_keyprefix) :].rsplit(self.sep, 1)[0]
        self.registered_tag = bytes_to_str(tag) if tag else None
        self.connection._deliver(loads(bytes_to_str(item)), dest)
        return dest

    def _get(self, queue: str, timeout: Any = None) -> Any:
        lists = [self._key(self._q_for_pri(queue, pri)) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:
            reply = client.execute_command(*self._take_command(lists))
            self._maybe_update_queues_expire(client, queue)
        if not reply:
            raise virtual.Empty()
        _, item, tag = reply
        # basic_get wraps the payload and appends it to the QoS next.
        self.registered_tag = bytes_to_str(tag) if tag else None
        return loads(bytes_to_str(item))

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        super()._put(queue, message, **kwargs)
        ring = ("EVAL", RING, 1, self._bell(queue), BELL_TOKENS)
        if batch is not None:
            batch.add("execute_command", *ring)
        else:
            with self.conn_or_acquire() as client:
                client.execute_command(*ring)


class Transport(redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """Make ``redis://`` and ``rediss://`` connections of this process use :class:`Transport`."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
