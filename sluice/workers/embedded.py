"""A real Celery worker subprocess started and stopped by the caller.

This is how ``sluice analyze`` runs on the embedded defaults: messages still go through a broker and are
consumed by a separate worker process, exactly as in a deployment, with no server to install.

Celery's warm shutdown takes seconds (billiard sleeps a second in every exiting pool child), so the
worker is not asked to shut down: once the run's messages are all acknowledged it is stopped at once
(:meth:`EmbeddedWorker.stop_when_idle`). That loses nothing because the embedded broker acknowledges
for real (:mod:`sluice.workers.fsbroker`): whatever a stopped worker held unacknowledged goes back to
its queue, and a task's database writes are one transaction, so they are whole or absent. Pool
children flush their buffered counters first (:mod:`sluice.workers.embedded_process`, the process's
entry point: ``app.Worker`` without Celery's command line).

This module imports nothing heavy: ``sluice analyze`` starts the worker before it loads Celery, so the
worker boots while the command prepares its run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sluice.errors import BackendUnavailable
from sluice.workers.priority import ALL_QUEUES

log = logging.getLogger(__name__)
#: How long the pool children get to flush their counters before the worker is killed.
_CHILD_GRACE = 1.0
#: Linux ``prctl`` option: a signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1
#: What asks a pool child to flush its counters and exit at once: a real-time signal that neither
#: Celery nor billiard handle (None where there is none: the children are then only killed).
STOP_SIGNAL: int | None = getattr(signal, "SIGRTMIN", None)
if STOP_SIGNAL is not None:
    STOP_SIGNAL += 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux; else nothing).

    A worker whose command was SIGKILLed would otherwise go on consuming as an orphan.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


class EmbeddedWorker:
    """One worker process (``concurrency`` prefork children) in its own process group."""

    def __init__(
        self,
        concurrency: int,
        log_file: Path,
        queues: Sequence[str] = ALL_QUEUES,
        env: dict[str, str] | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.log_file = log_file
        self.queues = tuple(queues)
        self.env = env
        self.name = f"embedded-{uuid.uuid4().hex[:8]}@%h"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sluice.workers.embedded_process",
            "--queues", ",".join(self.queues),
            "--concurrency", str(self.concurrency),
            "--hostname", self.name,
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded worker: %s", " ".join(self.command()))
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command(),
            env={**os.environ, **(self.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own group: a terminal's Ctrl-C reaches only the command, which then stops the
            # worker and all its pool children in one signal.
            start_new_session=True,
            preexec_fn=die_with_parent,  # a prctl: safe even if the parent has threads
        )

    def check_alive(self) -> None:
        """Raise :class:`BackendUnavailable` with the worker's last words if it has exited."""
        if self._process is None or self._process.poll() is None:
            return
        stderr = (
            self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
        )
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise BackendUnavailable(
            f"the embedded worker exited with code {self._process.returncode}; "
            f"see {self.log_file}" + (f"\n{tail}" if tail else "")
        )

    def stop_when_idle(self, broker_dir: Path, timeout: float = 5.0) -> None:
        """Stop once every message on this worker's queues is acknowledged (or after ``timeout``:
        what is left stays queued for the next worker)."""
        from sluice.workers.fsbroker import outstanding

        deadline = time.monotonic() + timeout
        while (
            self._process is not None
            and self._process.poll() is None
            and outstanding(broker_dir, queues=self.queues)
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        self.stop()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Celery's warm shutdown (running tasks finish and are acknowledged), for brokers whose
        unacknowledged messages come back only after a visibility timeout; killed after ``timeout``."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop within %.0fs; killing it", timeout)
        self.stop()

    def stop(self) -> None:
        """Stop the worker now: pool children flush their counters and exit, then the whole group
        is killed. Unacknowledged messages return to their queue (see the module docstring)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            children = _children(process.pid) if STOP_SIGNAL is not None else []
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, STOP_SIGNAL)  # type: ignore[arg-type]  # not None when listed
            deadline = time.monotonic() + _CHILD_GRACE
            while any(_exists(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.005)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc on Linux; none elsewhere, then only the kill runs)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
