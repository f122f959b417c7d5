"""The embedded broker never shows a consumer a half-written message file."""

from __future__ import annotations

import builtins
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

from sluice.workers import fsbroker


def _channel(folder: Path) -> Any:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
    }
    connection = Connection(f"{fsbroker.SCHEME}://", transport_options=options)
    return connection, connection.default_channel


def test_a_message_is_invisible_until_it_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer polling while the producer writes must find nothing, never an empty file."""
    connection, channel = _channel(tmp_path)
    real_open = builtins.open
    polled: list[str] = []

    class PollingFile:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def write(self, data: bytes) -> int:
            # A consumer's poll lands exactly between the file's creation and its content.
            try:
                polled.append(repr(channel._get("jobs")))
            except Empty:
                polled.append("empty")
            return int(self._handle.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._handle, name)

        def __enter__(self) -> PollingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

    def spying_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        return (
            PollingFile(handle) if "w" in mode and str(file).startswith(str(tmp_path)) else handle
        )

    monkeypatch.setattr(builtins, "open", spying_open)
    channel._put("jobs", {"body": "hello"})
    monkeypatch.undo()
    assert polled == ["empty"]  # kombu's own transport fails here: the poll reads an empty file
    assert channel._get("jobs") == {"body": "hello"}
    assert list(tmp_path.iterdir()) == []  # consumed, no partial file left behind
    connection.close()


def test_celery_uses_the_atomic_transport_for_the_embedded_broker() -> None:
    from sluice.celery import app

    assert isinstance(app.connection_for_write().transport, fsbroker.Transport)
