"""``sluice dlq ...``, ``sluice process-pending`` and ``sluice queue stats``."""

from __future__ import annotations

import json

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from sluice.clitools import SafeConsole

console = SafeConsole()


@click.group()
def dlq() -> None:
    """Dead-lettered tasks: list, show, replay, purge."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--task", "task_name", default=None, help="Only entries of this handler.")
@click.option("--pending", is_flag=True, help="Only entries not replayed yet.")
def dlq_list(limit: int, task_name: str | None, pending: bool) -> None:
    """List dead-lettered tasks, newest first."""
    from sluice.workers import DeadLetterQueue

    queue = DeadLetterQueue()
    queue.ensure_schema()
    table = Table(title="Dead letters", title_justify="left")
    for column in ("id", "task", "queue", "attempts", "replays", "error", "created", "replayed"):
        table.add_column(column, overflow="fold")
    for e in queue.list(limit, task_name, pending):
        table.add_row(
            str(e["id"]), e["task_name"], e["queue"], str(e["attempts"]), str(e["replays"]),
            e["error"][:80], e["created_at"] or "", e["replayed_at"] or "",
        )  # fmt: skip
    console.print(table)


@dlq.command("show")
@click.argument("entry_id", type=int)
def dlq_show(entry_id: int) -> None:
    """Print one entry as JSON (payload, error, traceback, attempt history)."""
    from sluice.workers import DeadLetterQueue

    console.print_json(json.dumps(DeadLetterQueue().get(entry_id)))


@dlq.command("replay")
@click.argument("entry_ids", type=int, nargs=-1, required=True)
def dlq_replay(entry_ids: tuple[int, ...]) -> None:
    """Submit the entries' tasks again (each replay raises the entry's replay count)."""
    from sluice.workers import DeadLetterQueue

    queue = DeadLetterQueue()
    for entry_id in entry_ids:
        console.print(f"replayed #{entry_id} as task {queue.replay(entry_id)}")


@dlq.command("purge")
@click.argument("entry_ids", type=int, nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Delete every entry.")
def dlq_purge(entry_ids: tuple[int, ...], purge_all: bool) -> None:
    """Delete the given entries (or --all)."""
    from sluice.errors import InvalidInput
    from sluice.workers import DeadLetterQueue

    if not entry_ids and not purge_all:
        raise InvalidInput("name the entries to purge, or pass --all")
    deleted = DeadLetterQueue().purge(None if purge_all else list(entry_ids))
    console.print(f"deleted {deleted} entries")


@click.command("process-pending")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Stop after this many tasks."
)
def process_pending(limit: int | None) -> None:
    """Run every queued task here, most urgent queue first (rollback step 4).

    Use after `ASYNC_PROCESSING_ENABLED=false` and stopping the workers, so nothing queued is left.
    """
    from sluice.celery import app
    from sluice.workers.drain import drain

    columns = (TextColumn("processing"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("processing", total=None)
        report = drain(
            app, lambda done, total: bar.update(task, completed=done, total=total), limit
        )
    console.print(f"executed {report.executed}, failed {report.failed} (dead-lettered)")
    for name, count in report.skipped.items():
        console.print(f"left {count}+ queued {name!r} task(s): no such task in this process")


@click.group()
def queue() -> None:
    """The task queues."""


@queue.command("stats")
def queue_stats() -> None:
    """Cluster-wide task counters and queue depths."""
    from sluice.celery import app
    from sluice.workers.stats import snapshot

    stats = snapshot(app)
    table = Table(title="Task queues", title_justify="left", show_header=False)
    for key in ("submitted", "completed", "failed", "retries", "batches_processed", "rate_limited"):
        table.add_row(key, str(stats[key]))
    table.add_row("success_rate", f"{stats['success_rate']:.3f}")
    table.add_row("pending", str(stats["queue"]["pending"]))
    table.add_row("running", str(stats["queue"]["running"]))
    for name, values in stats["by_queue"].items():
        table.add_row(f"queue {name}", ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    console.print(table)
