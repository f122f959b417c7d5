"""Messages a worker cannot carry are dead-lettered raw; they never kill the worker.

``submit_task`` refuses what a worker cannot carry (:mod:`sluice.workers.payload`), but anyone with
write access to the broker can publish a message that bypassed it. Two failures follow:

* a body nested a few hundred levels decodes, but the prefork pool then pickles the decoded arguments
  for its child and hits the recursion limit *in the worker's main process*: the worker dies, the
  message is redelivered and kills each restarted worker in turn;
* a body nested thousands of levels (or one that is not JSON) fails to decode; Celery logs it and
  acknowledges it: the message is gone without a trace.

The cure is at the decoder. Importing this module replaces kombu's ``application/json`` decoder with
:func:`decode_json`, which refuses a body nested deeper than :data:`MAX_MESSAGE_DEPTH` (far below
what pickling survives, far above any real task) with a ``DecodeError``. The worker's consumer,
:class:`PoisonSafeConsumer` (``worker_consumer`` in ``celeryconfig``), turns every decode error into
a dead-letter entry holding the raw body, then acknowledges the message; messages Celery would
reject and forget (a refused content type such as pickle, a body that is no task message) are
dead-lettered raw too before Celery rejects them. Nothing else changes: encoding is kombu's own,
and every well-formed message decodes exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import DecodeError
from kombu.serialization import registry
from kombu.utils import json as kombu_json

from sluice.workers.payload import MAX_DEPTH, fits

log = logging.getLogger(__name__)

#: The deepest message body a worker decodes: a payload's own :data:`MAX_DEPTH` plus Celery's
#: envelope (args, kwargs, embedded canvas) with room to spare.
MAX_MESSAGE_DEPTH = 2 * MAX_DEPTH
#: The error recorded with a dead-lettered message a worker could not run.
UNUSABLE = "unusable message"


def decode_json(body: Any) -> Any:
    """kombu's JSON decoder, refusing bodies nested deeper than :data:`MAX_MESSAGE_DEPTH`."""
    try:
        value = kombu_json.loads(body)
    except RecursionError:
        raise DecodeError("message body is nested too deeply to decode") from None
    # Counting brackets is C-fast and bounds the depth: most messages need no walk at all.
    raw = body.encode() if isinstance(body, str) else bytes(body)
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_MESSAGE_DEPTH and not fits(value, MAX_MESSAGE_DEPTH):
        raise DecodeError(f"message body is nested more than {MAX_MESSAGE_DEPTH} levels deep")
    return value


def install_json_decoder() -> None:
    """Make :func:`decode_json` the decoder of ``application/json`` in this process."""
    registry.register(
        "json",
        kombu_json.dumps,
        decode_json,
        content_type="application/json",
        content_encoding="utf-8",
    )


def _raw_text(body: Any) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8", "backslashreplace")
    except Exception:
        return repr(body)


def dead_letter_raw(message: Any, exc: BaseException) -> int:
    """Record a message a worker cannot run, raw, in the dead-letter table; returns its entry id."""
    from sluice.workers.deadletter import DeadLetterQueue

    headers = message.headers if isinstance(message.headers, dict) else {}
    delivery = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    priority = message.properties.get("priority") if isinstance(message.properties, dict) else None
    return DeadLetterQueue().add(
        task_id=str(headers.get("id") or message.properties.get("correlation_id") or "unknown"),
        task_name=str(headers.get("task") or UNUSABLE),
        payload={
            "raw_body": _raw_text(message.body),
            "content_type": str(message.content_type),
            "content_encoding": str(message.content_encoding),
            "headers": headers,
        },
        error=f"{UNUSABLE}: {type(exc).__name__}: {exc}",
        queue=str(delivery.get("routing_key") or "unknown"),
        priority=priority if isinstance(priority, int) else 0,
        attempts=0,
    )


class PoisonSafeConsumer(Consumer):
    """Celery's consumer, dead-lettering every message it cannot run instead of dropping it: one it
    cannot decode, one of a refused content type (pickle), one that is not a task message."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if _try_dead_letter(message, exc):
            message.ack()
        # else not acknowledged: the broker redelivers it later (Redis after the visibility
        # timeout, RabbitMQ when the channel closes), when the table may be reachable again.

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _try_dead_letter(message, exc)
        super().on_invalid_task(body, message, exc)  # logged and rejected, as Celery does

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _try_dead_letter(message, ValueError("not a Celery task message (no task header)"))
        super().on_unknown_message(body, message)


def _try_dead_letter(message: Any, exc: BaseException) -> bool:
    """Dead-letter ``message`` raw; False (logged) if even that failed."""
    try:
        entry = dead_letter_raw(message, exc)
    except Exception as store_error:
        log.critical("unusable message could not be dead-lettered: %s (%s)", exc, store_error)
        return False
    log.error("unusable message dead-lettered as #%d: %s", entry, exc)
    return True


install_json_decoder()
