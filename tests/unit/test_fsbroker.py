"""The embedded broker never shows a consumer a half-written message file."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kombu import Connection

from sluice.workers import fsbroker
from sluice.workers.entries import UNREADABLE_ENTRY, deliverable
from tests.broker_entries import BROKEN_ENVELOPES, ENTRIES, broken, nested

#: A message as kombu's virtual channel lays it down.
ENVELOPE = {
    "body": "aGVsbG8=",
    "content-type": "text/plain",
    "content-encoding": "utf-8",
    "headers": {},
    "properties": {
        "body_encoding": "base64",
        "delivery_tag": "tag-1",
        "delivery_info": {"exchange": "", "routing_key": "jobs"},
    },
}


def _channel(folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
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
    channel._put("jobs", ENVELOPE)
    monkeypatch.undo()
    assert polled == ["empty"]  # kombu's own transport fails here: the poll reads an empty file
    assert channel._get("jobs") == ENVELOPE
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    # Claimed until acknowledged, and no partial file left behind.
    assert [p.parent.name for p in leftovers] == [fsbroker.INFLIGHT]
    connection.close()


def test_celery_uses_the_atomic_transport_for_the_embedded_broker() -> None:
    from sluice.celery import app

    assert isinstance(app.connection_for_write().transport, fsbroker.Transport)


def _publish(channel: Any, queue: str, body: str) -> None:
    channel.queue_declare(queue=queue)
    message = channel.prepare_message(body)
    channel.basic_publish(message, exchange="", routing_key=queue)


def test_an_unacknowledged_message_stays_claimed_until_acked(tmp_path: Path) -> None:
    connection, channel = _channel(tmp_path)
    _publish(channel, "jobs", "work")
    message = channel.basic_get("jobs")
    assert message is not None and message.body == b"work"
    assert fsbroker.outstanding(tmp_path) == 1  # claimed, not yet acknowledged
    assert channel.basic_get("jobs") is None  # nobody else gets it meanwhile
    message.ack()
    assert fsbroker.outstanding(tmp_path) == 0
    connection.close()


def test_a_rejected_message_is_requeued_once(tmp_path: Path) -> None:
    connection, channel = _channel(tmp_path)
    _publish(channel, "jobs", "work")
    channel.basic_get("jobs").reject(requeue=True)
    again = channel.basic_get("jobs")
    assert again is not None and again.body == b"work"
    again.ack()
    assert fsbroker.outstanding(tmp_path) == 0
    connection.close()


def test_claims_of_a_dead_process_are_put_back(tmp_path: Path) -> None:
    """What a SIGKILLed worker leaves behind: a claimed file owned by a pid that is gone."""
    import subprocess
    import sys

    connection, channel = _channel(tmp_path)
    _publish(channel, "jobs", "work")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_owner = f"{int(dead.stdout)}.0"
    (tmp_path / fsbroker.INFLIGHT).mkdir(exist_ok=True)
    [queued] = [p for p in tmp_path.iterdir() if p.name.endswith(".msg")]
    queued.rename(tmp_path / fsbroker.INFLIGHT / f"{dead_owner}-{queued.name}")
    live_owner = fsbroker.process_identity()
    live = tmp_path / fsbroker.INFLIGHT / f"{live_owner}-9_x.jobs.msg"
    live.write_text("{}")
    assert fsbroker.recover_orphans(tmp_path) == 1
    assert live.exists(), "a live process keeps its claims"
    redelivered = channel.basic_get("jobs")
    assert redelivered is not None and redelivered.body == b"work"
    connection.close()


def _envelope(tmp_path: Path) -> dict[str, Any]:
    """A message as the embedded broker stores it, read back from its file."""
    folder = tmp_path / "template"
    connection, channel = _channel(folder)
    _publish(channel, "jobs", "work")
    connection.close()
    (path,) = folder.glob("*.msg")
    envelope: dict[str, Any] = json.loads(path.read_bytes())
    return envelope


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(entry=ENTRIES)
def test_a_file_that_is_no_message_is_handed_over_as_an_unreadable_one_and_kept(
    tmp_path_factory: pytest.TempPathFactory, entry: bytes | str
) -> None:
    """Whatever file sits in a queue's place, a take hands it over as a message (its raw bytes
    under a content type no worker accepts: a Celery worker dead-letters it), claimed until
    acknowledged and put back if its taker dies (a stock worker stopped on "Cannot read file")."""
    tmp_path = tmp_path_factory.mktemp("entries")
    if isinstance(entry, str):
        entry = broken(_envelope(tmp_path), entry)
    folder = tmp_path / "broker"
    connection, channel = _channel(folder)
    (folder / "0001_junk.jobs.msg").write_bytes(entry)
    message = channel.basic_get("jobs")
    assert message is not None
    assert message.content_type == UNREADABLE_ENTRY and message.body == entry
    assert fsbroker.outstanding(folder) == 1 and channel.basic_get("jobs") is None  # claimed
    message.reject(requeue=True)
    again = channel.basic_get("jobs")
    assert again is not None and again.body == entry
    again.ack()
    assert fsbroker.outstanding(folder) == 0
    connection.close()


@pytest.mark.parametrize("depth", [990, 1200])
def test_a_file_nested_deeper_than_the_decoder_goes_is_handed_over_as_unreadable(
    tmp_path: Path, depth: int
) -> None:
    entry = nested(_envelope(tmp_path), depth)
    folder = tmp_path / "broker"
    connection, channel = _channel(folder)
    (folder / "0001_deep.jobs.msg").write_bytes(entry)
    message = channel.basic_get("jobs")
    assert message is not None and message.body == entry
    assert message.content_type == UNREADABLE_ENTRY
    message.ack()
    connection.close()


def test_a_message_is_deliverable_as_the_take_script_judges_it() -> None:
    """The Python rules agree with every well-formed envelope the transports write."""
    assert deliverable(ENVELOPE)
    for how in BROKEN_ENVELOPES:
        assert not deliverable(json.loads(broken(ENVELOPE, how))), how
