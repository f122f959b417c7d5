"""The ``sluice`` command.

Importing this module loads only click, rich and the settings: every subcommand's capability is
imported when that subcommand runs (``sluice --help`` starts in a fraction of a second).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from sluice.clitools import Interrupted, SafeConsole, SluiceGroup, printable, stop_signals_interrupt

if TYPE_CHECKING:
    from sluice.analysis.review import Review
    from sluice.analysis.runner import AnalysisReport

# The interpreter's last garbage collections at exit walk every object a run created, for nothing
# (the process is ending): 0.15-0.4 s of every command, a third of a warm `sluice analyze`. Frozen
# objects are skipped. Registered first, so it runs last, after every other exit handler.
atexit.register(gc.freeze)

console = SafeConsole()
err_console = SafeConsole(stderr=True)
SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}
#: Exit status when a finding at or above ``--fail-on`` exists (1: failed files or a service
#: problem, 2: bad input).
EXIT_FINDINGS = 3

LAZY_COMMANDS = {
    "cache": ("sluice.cache.cli:cache", "AI result cache: stats and clear."),
    "cdn": ("sluice.cdn.cli:cdn", "Static resources for a CDN: build, nginx, invalidate, flush."),
    "dlq": ("sluice.workers.cli:dlq", "Dead-letter queue: list, show, replay, purge."),
    "process-pending": (
        "sluice.workers.cli:process_pending",
        "Run queued tasks inline in this process (no worker).",
    ),
    "queue": ("sluice.workers.cli:queue", "Queue lengths per priority."),
    "serve": ("sluice.monitoring.cli:serve", "Serve /health, /metrics and /stats over HTTP."),
    "stats": ("sluice.monitoring.cli:stats", "Cluster-wide counters: tasks, cache, queries."),
}
LAZY_DB_COMMANDS = {
    "report": ("sluice.query.cli:report", "Slow queries and index advice from the database."),
    "seed": ("sluice.query.cli:seed", "Fill the database with generated sample data."),
}


@click.group(
    cls=SluiceGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    "0 = use running `celery -A sluice worker` processes when SLUICE_BROKER_URL is set; "
    "at most 4 per CPU).",
)
@click.option(
    "--max-findings",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="How many findings the table lists (most severe first); json and sarif list all.",
)
@click.option(
    "--format",
    "output_format",
    default="table",
    show_default=True,
    metavar="table|json|sarif",
    help="table for people; json (every finding and the summary) or sarif (SARIF 2.1.0, for "
    "code scanning dashboards) for tools.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the report here instead of stdout (the summary still goes to the terminal).",
)
@click.option(
    "--fail-on",
    default=None,
    metavar="SEVERITY",
    help="Exit 3 if a finding at or above this severity is reported "
    "(critical, high, medium, low, info).",
)
@click.option(
    "--since",
    default=None,
    metavar="REV",
    help="Only files changed since this git revision (branch, tag or commit), including "
    "uncommitted and new files.",
)
@click.option(
    "--changed-lines-only",
    is_flag=True,
    help="With --since: only findings on lines the change added or modified.",
)
def analyze(
    path: str,
    rules: tuple[str, ...],
    workers: int | None,
    max_findings: int,
    output_format: str,
    output: Path | None,
    fail_on: str | None,
    since: str | None,
    changed_lines_only: bool,
) -> None:
    """AI code review of every source file under PATH.

    Each file becomes one HIGH-priority Celery task; workers store findings in the database.

    \b
    Exit status:
      0  reviewed, nothing at or above --fail-on
      1  a file failed after its retries, or a service or setting problem
      2  bad input (path, option, git revision)
      3  a finding at or above --fail-on
      130/143  interrupted by SIGINT/SIGTERM (unfinished files stay queued)
    """
    from sluice.analysis.review import check_format, severity_at_least

    check_format(output_format)
    failing = severity_at_least(fail_on) if fail_on else frozenset()
    _check_output_path(output)
    try:
        with stop_signals_interrupt():
            report = _run_with_progress(path, rules, workers, since, changed_lines_only)
    except Interrupted as exc:
        err_console.print(
            f"interrupted by {exc}: the worker is stopped; files not yet analysed stay queued "
            "for the next run",
            style="yellow",
        )
        sys.exit(exc.exit_code)
    from sluice.analysis.review import review_of
    from sluice.settings import get_settings

    settings = get_settings()
    review = review_of(report, settings.ai_provider, settings.ai_model)
    _emit(review, output_format, output, max_findings)
    summary_console = console if output_format == "table" or output else err_console
    summary_console.print(_summary_table(report))
    if report.failed:
        for file_path, error in report.failed:
            err_console.print(
                Text("failed: ", style="red") + Text(printable(f"{file_path}: {error}"))
            )
        sys.exit(1)
    if any(f["severity"] in failing for f in review.findings):
        sys.exit(EXIT_FINDINGS)


def _run_with_progress(
    path: str,
    rules: tuple[str, ...],
    workers: int | None,
    since: str | None,
    changed_lines_only: bool,
) -> AnalysisReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sluice.analysis.runner import run_analysis

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("analysing", total=None)
        return run_analysis(
            path,
            rules=rules or None,
            workers=workers,
            since=since,
            changed_lines_only=changed_lines_only,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _check_output_path(output: Path | None) -> None:
    from sluice.errors import InvalidInput

    if output is None:
        return
    if output.is_dir():
        raise InvalidInput(f"--output {str(output)!r} is a directory; name a file")
    if not output.parent.is_dir():
        raise InvalidInput(
            f"--output {str(output)!r}: folder {str(output.parent)!r} does not exist"
        )


def _emit(review: Review, output_format: str, output: Path | None, max_findings: int) -> None:
    """Write the review in ``output_format`` to ``output`` (atomically) or stdout."""
    if output_format == "table":
        if output is None:
            _print_findings(console, review.findings[:max_findings], len(review.findings))
            return
        with _atomic_text(output) as handle:
            file_console = SafeConsole(file=handle, width=200, color_system=None)
            _print_findings(file_console, review.findings[:max_findings], len(review.findings))
        return
    text = _document(review, output_format)
    if output is None:
        click.echo(text)
    else:
        with _atomic_text(output) as handle:
            handle.write(text + "\n")


def _document(review: Review, output_format: str) -> str:
    if output_format == "json":
        from sluice.analysis.jsonout import to_json

        return to_json(review)
    import json

    from sluice.analysis.sarif import to_sarif

    return json.dumps(to_sarif(review), indent=2, ensure_ascii=False)


class _atomic_text:
    """A text file written under a temporary name and renamed into place when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd, self._partial = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._handle = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape")
        return self._handle

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._handle.close()
        if exc_type is None:
            os.replace(self._partial, self.path)
        else:
            os.unlink(self._partial)


def _print_findings(target: SafeConsole, findings: list[dict[str, Any]], total: int) -> None:
    if not findings:
        return
    table = Table(title=f"Findings ({len(findings)} of {total})", title_justify="left")
    for column in ("location", "severity", "rule", "message"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(
            printable(f"{f['path']}:{f['line']}"),
            Text(f["severity"], style=SEVERITY_STYLE.get(f["severity"], "")),
            printable(f["rule"]),
            f["message"],
        )
    target.print(table)


def _summary_table(report: AnalysisReport) -> Table:
    table = Table(
        title=f"Analysis session {report.session_id}", title_justify="left", show_header=False
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("root", printable(report.root))
    table.add_row("mode", report.mode)
    if report.changes is not None:
        scope = "changed lines" if report.changed_lines_only else "changed files"
        table.add_row("reviewed", f"{scope} since {report.changes.revision}")
    table.add_row("files analysed", f"{report.files_done} of {report.files_total}")
    skipped = sum(report.walk.skipped.values()) + len(report.walk.unreadable)
    details = ", ".join(f"{n} {why}" for why, n in sorted(report.walk.skipped.items()))
    table.add_row("files skipped", f"{skipped}" + (f" ({details})" if details else ""))
    for path in report.walk.unreadable:
        table.add_row("unreadable", printable(path))
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
    return table


@main.group()
def sessions() -> None:
    """Past analysis sessions, read back from the database."""


@sessions.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def sessions_list(limit: int) -> None:
    """The newest sessions: id, status, root, files, findings, when."""
    from sluice.analysis.sessions import list_sessions
    from sluice.db import upgrade

    upgrade()
    rows = list_sessions(limit)
    if not rows:
        console.print("no analysis sessions stored yet; run `sluice analyze PATH`")
        return
    table = Table(title="Analysis sessions", title_justify="left")
    for column in ("id", "status", "root", "files", "findings", "started", "finished"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row.id),
            row.status,
            printable(row.root),
            f"{row.files_analysed} of {row.files_total}",
            str(row.findings),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.finished_at.strftime("%Y-%m-%d %H:%M:%S") if row.finished_at else "-",
        )
    console.print(table)


@sessions.command("show")
@click.argument("session_id", type=click.IntRange(min=1), metavar="ID")
@click.option("--format", "output_format", default="table", show_default=True,
              metavar="table|json|sarif", help="As for `sluice analyze --format`.")  # fmt: skip
@click.option("--max-findings", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many findings the table lists.")  # fmt: skip
def sessions_show(session_id: int, output_format: str, max_findings: int) -> None:
    """One stored session with its findings (exit 2 if there is no such session)."""
    from sluice.analysis.review import check_format
    from sluice.analysis.sessions import load_session
    from sluice.db import upgrade

    check_format(output_format)
    upgrade()
    review = load_session(session_id)
    if output_format != "table":
        click.echo(_document(review, output_format))
        return
    _print_findings(console, review.findings[:max_findings], len(review.findings))
    table = Table(title=f"Analysis session {review.session_id}", title_justify="left",
                  show_header=False)  # fmt: skip
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in (
        ("root", printable(review.root)),
        ("status", review.status),
        ("provider", f"{review.provider} ({review.model})"),
        ("files analysed", f"{review.files_analysed} of {review.files_total}"),
        *((f"findings: {severity}", str(n)) for severity, n in review.by_severity.items()),
        ("findings total", str(len(review.findings))),
        ("started", review.created_at or "-"),
        ("finished", review.finished_at or "-"),
    ):
        table.add_row(what, value)
    console.print(table)


@main.group(cls=SluiceGroup, lazy=LAZY_DB_COMMANDS)
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
        table.add_row(name, shown)
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


if __name__ == "__main__":
    main()
