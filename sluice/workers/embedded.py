"""A real ``celery -A sluice worker`` subprocess started and stopped by the caller.

This is how ``sluice analyze`` runs on the embedded defaults: messages still go through a broker and are
consumed by a separate worker process, exactly as in a deployment, with no server to install.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sluice.errors import BackendUnavailable
from sluice.workers.priority import ALL_QUEUES

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """Context manager around one worker process (``concurrency`` prefork children)."""

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

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "sluice", "worker",
            "--queues", ",".join(self.queues),
            "--concurrency", str(self.concurrency),
            "--pool", "prefork",
            # chord_unlock and retries wait as ETA messages that count against prefetch; with
            # prefetch 1 they would stall the embedded broker between polls.
            "--prefetch-multiplier", "8",
            "--hostname", self.name,
            "--loglevel", "INFO",
            "--logfile", str(self.log_file),
            "--without-gossip", "--without-mingle",
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

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: finish running tasks), then SIGKILL if it does not exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop within %.0fs; killing it", timeout)
            process.kill()
            process.wait()

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
