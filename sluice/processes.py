"""Which process owns something, and whether it still runs: for claims that live on this machine.

The embedded broker's in-flight messages and the disk store's locks name their owner by
:func:`process_identity`; anyone may take back what a process that no longer exists held, at once,
instead of waiting out a lease. The start time tells a reused pid from the original.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), or None for a zombie or where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else fields[19]


def process_identity(pid: int | None = None) -> str:
    """``pid.starttime`` of a process (``pid.0`` where /proc is missing); this process by default."""
    return _own_identity(os.getpid()) if pid is None else _identity_of(pid)


def _identity_of(pid: int) -> str:
    return f"{pid}.{_start_time(pid) or 0}"


# Read once per process (a forked child has another pid): every store lock and every claim of the
# embedded broker's poll names its owner.
_own_identity = functools.lru_cache(maxsize=1)(_identity_of)


def owner_alive(identity: str) -> bool:
    """Whether the process ``identity`` names may still run (True when it cannot be judged)."""
    pid_text, _, started = identity.partition(".")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError, OverflowError):
        return pid_text.isdigit()  # alive but not ours, or not a pid we can judge: leave it
    now = _start_time(pid)
    if now is None:
        return started == "0" or not Path("/proc").is_dir()  # a zombie, or no /proc to ask
    return started in ("0", now)
