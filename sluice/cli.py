"""The ``sluice`` command."""

from __future__ import annotations

import logging
import sys
from dataclasses import fields, is_dataclass
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sluice.clitools import SluiceGroup

console = Console()
err_console = Console(stderr=True)
SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


@click.group(cls=SluiceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level to stderr.")
def main(verbose: bool) -> None:
    """sluice: AI code review on Celery, with caching, priority queues and query optimization.

    Runs with no services on embedded defaults (data under $SLUICE_DATA_DIR, default
    ~/.local/share/sluice); set SLUICE_BROKER_URL, SLUICE_REDIS_URL and SLUICE_DATABASE_URL to run on
    Redis, PostgreSQL and separate `celery -A sluice worker` processes.
    """
    from sluice.settings import get_settings

    settings = get_settings()
    # Libraries (alembic, kombu) stay at WARNING so the command's own output is what a user reads.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from sluice.monitoring.logs import configure_logging

    configure_logging()  # SLUICE_LOG_FORMAT=json, and secrets redacted from every record
    logging.getLogger("sluice").setLevel(
        logging.DEBUG if verbose else max(logging.WARNING, getattr(logging, settings.log_level))
    )


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--rules",
    multiple=True,
    metavar="RULE",
    help="Only these rule categories or rule ids (repeatable), e.g. --rules security.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes to start for this run (default: 2 on the embedded broker, "
    "0 = use running `celery -A sluice worker` processes when SLUICE_BROKER_URL is set).",
)
@click.option(
    "--max-findings",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="How many findings to list (most severe first); the summary counts all of them.",
)
def analyze(path: str, rules: tuple[str, ...], workers: int | None, max_findings: int) -> None:
    """AI code review of every source file under PATH.

    Each file becomes one HIGH-priority Celery task; workers store findings in the database.
    Exits 1 if any file failed after its retries, 2 on bad input.
    """
    from sluice.analysis import run_analysis

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("analysing", total=None)
        report = run_analysis(
            path,
            rules=rules or None,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    _print_findings(report.findings[:max_findings], len(report.findings))
    _print_summary(report)
    if report.failed:
        for file_path, error in report.failed:
            err_console.print(f"[red]failed:[/red] {file_path}: {error}", highlight=False)
        sys.exit(1)


def _print_findings(findings: list[dict[str, Any]], total: int) -> None:
    if not findings:
        return
    table = Table(title=f"Findings ({len(findings)} of {total})", title_justify="left")
    for column in ("location", "severity", "rule", "message"):
        table.add_column(column, overflow="fold")
    for f in findings:
        style = SEVERITY_STYLE.get(f["severity"], "")
        table.add_row(
            f"{f['path']}:{f['line']}", f"[{style}]{f['severity']}[/]", f["rule"], f["message"]
        )
    console.print(table)


def _print_summary(report: Any) -> None:
    table = Table(
        title=f"Analysis session {report.session_id}", title_justify="left", show_header=False
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("root", report.root)
    table.add_row("mode", report.mode)
    table.add_row("files analysed", f"{report.files_done} of {report.files_total}")
    skipped = sum(report.walk.skipped.values()) + len(report.walk.unreadable)
    details = ", ".join(f"{n} {why}" for why, n in sorted(report.walk.skipped.items()))
    table.add_row("files skipped", f"{skipped}" + (f" ({details})" if details else ""))
    for path in report.walk.unreadable:
        table.add_row("unreadable", path)
    for severity, count in report.by_severity.items():
        table.add_row(f"findings: {severity}", str(count))
    table.add_row("findings total", str(report.findings_total))
    hit_rate = report.cache_hits / report.files_done if report.files_done else 0.0
    table.add_row("provider calls", str(report.provider_calls))
    table.add_row("cache hits", f"{report.cache_hits} ({hit_rate:.0%})")
    table.add_row("cost saved", f"${report.cost_saved_usd:.4f}")
    table.add_row("files embedded", str(report.files_embedded))
    table.add_row("duration", f"{report.duration_s:.2f} s")
    table.add_row("throughput", f"{report.files_per_second:.1f} files/s")
    console.print(table)


@main.group()
def db() -> None:
    """Database migrations (Alembic revisions shipped with sluice)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    from sluice.db import current_revision, upgrade

    upgrade(revision)
    console.print(f"database at revision {current_revision() or 'base'}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (`base` removes every sluice table)."""
    from sluice.db import current_revision, downgrade

    downgrade(revision)
    console.print(f"database at revision {current_revision() or 'base'}")


@db.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from sluice.db import current_revision

    console.print(current_revision() or "base")


@main.command("config")
def show_config() -> None:
    """Print the effective settings (secrets hidden)."""
    from sluice.redaction import redact
    from sluice.settings import get_settings, load_secrets

    table = Table(show_header=False)
    secrets = load_secrets()
    for name, value, secret in _setting_rows(get_settings()):
        shown = ("(set)" if value else "(not set)") if secret else redact(str(value), secrets)
        table.add_row(name, escape(shown))
    console.print(table)


def _setting_rows(settings: Any, prefix: str = "") -> list[tuple[str, Any, bool]]:
    """``(name, value, is_secret)`` per setting; a nested section (``cdn``) as ``cdn.<name>``."""
    rows: list[tuple[str, Any, bool]] = []
    for item in fields(settings):
        value = getattr(settings, item.name)
        if is_dataclass(value):
            rows += _setting_rows(value, f"{prefix}{item.name}.")
        else:
            # Fields kept out of repr are the secrets (API keys, tokens).
            rows.append((prefix + item.name, value, not item.repr))
    return rows


def _register_subcommands() -> None:
    """Attach the capabilities' own command groups (each lives next to its capability)."""
    from sluice.cache.cli import cache
    from sluice.cdn.cli import cdn
    from sluice.monitoring.cli import serve, stats
    from sluice.query.cli import report as db_report
    from sluice.query.cli import seed as db_seed
    from sluice.workers.cli import dlq, process_pending, queue

    db.add_command(db_report)
    db.add_command(db_seed)
    main.add_command(cache)
    main.add_command(cdn)  # handles its own errors (exit 1, or 2 for bad input)
    for command in (dlq, process_pending, queue, serve, stats):
        main.add_command(command)


_register_subcommands()

if __name__ == "__main__":
    main()
