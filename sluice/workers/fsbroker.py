"""kombu's filesystem transport with atomic message files and real acknowledgements (the embedded
broker).

kombu writes a message file in place (open, then write), and a consumer listing the folder in between
moves and reads the still-empty file: the message is lost and the worker dies on the JSON error
(seen under load with two processes). Here a message is written under a hidden temporary name and
renamed into place, which is atomic on POSIX, so a consumer only ever sees complete files.

kombu also deletes a message file as soon as a consumer reads it, so a worker killed mid-task loses
the message (late acks mean nothing). Here a consumer *claims* a message by renaming it into the
``.inflight`` folder under its own process identity; the file is deleted on ack, put back on reject or
on an orderly close, and any consumer puts back the claims of a process that no longer exists. A
worker killed by SIGKILL therefore has its messages redelivered, as Redis does after its visibility
timeout, and a message is never half-consumed.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from sluice.processes import owner_alive, process_identity
from sluice.workers.entries import deliverable, unreadable_entry

#: The URL scheme celeryconfig uses for the embedded broker.
SCHEME = "sluicefs"
#: Folder (inside the broker folder) of claimed, not yet acknowledged messages.
INFLIGHT = ".inflight"
#: Longest a timed wait for a message blocks before returning to the caller's loop.
MAX_WAIT = 0.05
#: How often a consumer looks for claims of dead processes.
RECOVERY_INTERVAL = 0.5


def recover_orphans(folder: str | os.PathLike[str]) -> int:
    """Put back every message claimed by a process that no longer exists; return how many."""
    inflight = Path(folder) / INFLIGHT
    try:
        names = os.listdir(inflight)
    except FileNotFoundError:
        return 0
    restored = 0
    for name in names:
        owner, _, original = name.partition("-")
        if not original or owner_alive(owner):
            continue
        with contextlib.suppress(FileNotFoundError):  # another consumer put it back first
            os.rename(inflight / name, Path(folder) / original)
            restored += 1
    return restored


def outstanding(folder: str | os.PathLike[str], queues: Iterable[str] | None = None) -> int:
    """Messages not yet acknowledged, queued or claimed (only those of ``queues`` if given)."""
    base = Path(folder)
    wanted = None if queues is None else {f"{queue}.msg" for queue in queues}

    def counted(name: str) -> bool:
        queue_part = name.partition(".")[2]
        return queue_part.endswith(".msg") and (wanted is None or queue_part in wanted)

    try:
        queued = sum(1 for name in os.listdir(base) if counted(name))
    except FileNotFoundError:
        return 0
    try:
        claimed = sum(1 for name in os.listdir(base / INFLIGHT) if counted(name.partition("-")[2]))
    except FileNotFoundError:
        claimed = 0
    return queued + claimed


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: dict[str, str] = {}  # delivery tag -> claimed file
        self._no_ack_queues: set[str] = set()
        self._next_recovery = 0.0

    # kombu's own bases disagree on the name (``message`` vs ``payload``); filesystem's is kept.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot keeps the partial file out of every queue's listing until the rename.
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def basic_consume(self, queue: Any, no_ack: Any, *args: Any, **kwargs: Any) -> Any:
        if no_ack:  # remote-control replies and the like: nobody will ever ack them
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: Any, no_ack: bool = False, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_get(queue, no_ack, **kwargs)

    def _get(self, queue: Any) -> Any:  # type: ignore[override]
        """Claim the oldest message of ``queue`` (an atomic rename: one consumer wins)."""
        self._recover_dead_claims()
        wanted = f"{queue}.msg"
        inflight = os.path.join(self.data_folder_in, INFLIGHT)
        os.makedirs(inflight, exist_ok=True)
        owner = process_identity()
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(inflight, f"{owner}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it
            try:
                with open(claimed, "rb") as handle:
                    raw = handle.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            try:
                payload = loads(bytes_to_str(raw))
            except (ValueError, RecursionError):
                payload = None
            if not deliverable(payload):
                # A file that is no message: the worker dead-letters it raw instead of dying.
                payload = unreadable_entry(raw, uuid.uuid4().hex, queue)
            tag = payload["properties"]["delivery_tag"]
            if queue in self._no_ack_queues:
                os.remove(claimed)  # nothing will ever acknowledge it
            else:
                self._claims[tag] = claimed
            return payload
        raise Empty()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._settle(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self._settle(delivery_tag)

    def _restore(self, message: Any) -> None:
        """Put a copy back on its queue first, then drop the claim: a crash between the two
        duplicates the message (handlers are idempotent), it never loses it."""
        super()._restore(message)
        self._settle(message.delivery_tag)

    def _settle(self, delivery_tag: Any) -> None:
        claimed = self._claims.pop(delivery_tag, None)
        if claimed:
            with contextlib.suppress(FileNotFoundError):
                os.remove(claimed)

    def _recover_dead_claims(self) -> None:
        now = time.monotonic()
        if now >= self._next_recovery:
            self._next_recovery = now + RECOVERY_INTERVAL
            recover_orphans(self.data_folder_in)


class Transport(filesystem.Transport):
    Channel = Channel

    # kombu's two base classes disagree on the signature; the virtual transport's is kept.
    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        """Wait at most :data:`MAX_WAIT` when the caller gives a timeout: Celery's worker loop
        performs its pending acknowledgements only between waits, and asks to wait 2 s, which kept a
        finished task unacknowledged (and an embedded run waiting) for up to 2 s."""
        if timeout is not None:
            timeout = min(timeout, MAX_WAIT)
        return super().drain_events(connection, timeout=timeout)


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
