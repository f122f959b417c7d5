"""The embedded worker process: ``python -m sluice.workers.embedded_process`` (started by
:class:`sluice.workers.embedded.EmbeddedWorker`).

It runs the same ``app.Worker`` as ``celery -A sluice worker``, without loading Celery's command line,
which imports every subcommand and plugin (flower, a REPL) and costs most of a second per start.

Pool children leave at once on :data:`~sluice.workers.embedded.STOP_SIGNAL` after flushing their
buffered counters (a task they were running is abandoned: its transaction never commits and its
message goes back to the queue), and every process of the worker dies with its parent. Not SIGTERM:
billiard handles that in pool children itself, and its exit path sleeps a second.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from celery.signals import worker_process_init

from sluice.store.counters import flush_all
from sluice.workers.embedded import STOP_SIGNAL, die_with_parent


def _flush_and_exit(signum: int, frame: Any) -> None:
    try:
        flush_all()
    finally:
        os._exit(0)


@worker_process_init.connect(weak=False)
def install_exit_handler(**_: Any) -> None:
    """Flush-then-exit on the stop signal, which is also what the child gets if the worker dies."""
    if STOP_SIGNAL is not None:
        signal.signal(STOP_SIGNAL, _flush_and_exit)
        die_with_parent(STOP_SIGNAL)


@worker_process_init.connect(weak=False)
def open_connections(**_: Any) -> None:
    """Open what a task uses before the first one arrives.

    The worker boots while the command walks and migrates, so this costs the run nothing; done by
    the first task instead, it delayed every run's first results by about a tenth of a second.
    The result backend is touched through a read every backend has (SQLite's or Redis's, as
    ``--workers N`` runs on either).
    """
    from sluice.cache import get_ai_cache
    from sluice.celery import app
    from sluice.db import get_engine

    get_ai_cache()
    with get_engine().connect():
        pass
    app.backend.get_state("sluice-warm-up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the embedded sluice worker")
    parser.add_argument("--queues", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--logfile", required=True)
    args = parser.parse_args(argv)
    from celery.utils.nodenames import default_nodename, host_format

    from sluice.celery import app

    worker = app.Worker(
        hostname=host_format(default_nodename(args.hostname)),
        queues=args.queues,
        concurrency=args.concurrency,
        pool_cls="prefork",
        # chord_unlock and retries wait as ETA messages that count against prefetch; with
        # prefetch 1 they would stall the embedded broker between polls.
        prefetch_multiplier=8,
        # Countdowns (chord_unlock polls, retries) are checked this often instead of every second.
        timer_precision=0.05,
        loglevel="INFO",
        logfile=args.logfile,
        without_gossip=True,
        without_mingle=True,
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    raise SystemExit(main())
