"""kombu's Redis transport, minus a message lost when the broker drops out mid-delivery.

kombu takes a message off its queue with BRPOP and only then records it as unacknowledged (a ZADD
and HSET that let another worker restore it after the visibility timeout). When Redis goes away in
between (a restart, a failover), that registration raises, the message never reaches Celery and
exists nowhere any more: no worker logs it as received and no restore brings it back (found by the
broker-restart drill under load: one file in 160 never analysed). Here the registration is retried
until the broker answers again, so the message is delivered and acknowledged as usual.

``celeryconfig`` makes this the transport of ``redis://`` and ``rediss://`` URLs in the processes that
load it (kombu's alias table): the URL, and so every tool reading it (Flower, ``celery inspect``,
celery-exporter), stays as it is.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis

log = logging.getLogger(__name__)

#: How long a taken message's registration is retried while the broker is unreachable.
REGISTER_DEADLINE = 120.0
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 2.0


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        deadline = time.monotonic() + REGISTER_DEADLINE
        pause = _FIRST_PAUSE
        while True:
            try:
                super().append(message, delivery_tag)
                return
            except self.channel.connection_errors as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "broker unreachable for %.0fs: message %s taken off its queue was not "
                        "recorded as unacknowledged and is lost: %s",
                        REGISTER_DEADLINE,
                        message.properties.get("correlation_id", delivery_tag),
                        exc,
                    )
                    raise
                log.warning("broker unreachable while taking a message (%s); retrying", exc)
                time.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """Make ``redis://`` and ``rediss://`` connections of this process use :class:`Transport`."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
