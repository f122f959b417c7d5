"""kombu's filesystem transport with atomic message files (the embedded broker).

kombu writes a message file in place (open, then write), and a consumer listing the folder in between
moves and reads the still-empty file: the message is lost and the worker dies on the JSON error
(seen under load with two processes). Here a message is written under a hidden temporary name and
renamed into place, which is atomic on POSIX, so a consumer only ever sees complete files.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: The URL scheme celeryconfig uses for the embedded broker.
SCHEME = "sluicefs"


class Channel(filesystem.Channel):
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


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
