"""The ``sluice cdn`` command group: build, nginx, invalidate, flush.

Mounted on the main command with ``main.add_command(cdn)``; as a :class:`SluiceGroup` it reports
a :class:`SluiceError` as one line (exit 1, or 2 for bad input) when used on its own too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sluice.cdn.compression import CompressionReport
from sluice.cdn.manager import get_cdn_manager
from sluice.cdn.nginx import check_config
from sluice.cdn.policies import PolicyTable
from sluice.clitools import SafeConsole, SluiceGroup
from sluice.errors import InvalidInput, SluiceError


@click.group(cls=SluiceGroup)
def cdn() -> None:
    """Static assets for a CDN: versioned builds, nginx config, purges."""


@cdn.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (created if missing).",
)
def build(src: Path, out: Path) -> None:
    """Hash, manifest, rewrite references and precompress SRC into --out."""
    manager = get_cdn_manager()
    err = SafeConsole(stderr=True)
    columns = (TextColumn("compressing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("compressing", total=None)
        result = manager.build(
            src, out, lambda done, total: bar.update(task, completed=done, total=total)
        )
    for item in result.manifest.missing:
        err.print(
            Text("warning: ", style="yellow"),
            f"{item.source}: {item.reference} ({item.reason})",
            sep="",
        )
    console = SafeConsole()
    console.print(_summary(result.compression, manager.policies))
    console.print(
        f"{len(result.manifest.paths)} assets, {result.manifest.written} file(s) written, "
        f"{result.compression.compressed} compressed, {result.compression.unchanged} "
        f"unchanged in {result.compression.seconds:.2f} s",
        highlight=False,
    )


def _summary(report: CompressionReport, policies: PolicyTable) -> Table:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for f in report.files:
        row = totals[policies.type_for(f.path).name]
        row[0] += 1
        row[1] += f.size
        row[2] += f.gzip_size or f.size  # a copy not kept is served as the original
        row[3] += f.brotli_size or f.size
    table = Table(title="Compressible assets by type", title_justify="left")
    for column in ("type", "files", "original", "gzip", "brotli", "br ratio"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for name, (files, size, gz, br) in sorted(totals.items()):
        table.add_row(
            name, str(files), _kib(size), _kib(gz), _kib(br), f"{br / size:.1%}" if size else "-"
        )
    return table


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB"


@cdn.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build directory to serve (default: SLUICE_CDN_STATIC_ROOT).",
)
@click.option("--listen", default="80", show_default=True)
@click.option("--server-name", default="_", show_default=True)
@click.option("--access-log", default="/var/log/nginx/sluice-cdn.access.log", show_default=True)
@click.option("--no-brotli", is_flag=True, help="Leave out brotli_static (module not installed).")
@click.option("--check", is_flag=True, help="Also validate the result with `nginx -t`.")
def nginx(
    root: Path | None, listen: str, server_name: str, access_log: str, no_brotli: bool, check: bool
) -> None:
    """Print the nginx configuration for the built assets."""
    config = get_cdn_manager().nginx_config(root, listen, server_name, access_log, not no_brotli)
    click.echo(config, nl=False)
    if check:
        ok, output = check_config(config)
        if not ok:
            raise InvalidInput(f"nginx -t rejected the configuration: {output}")
        click.echo("# nginx -t: configuration is valid", err=True)


@cdn.command()
@click.argument("paths", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Invalidate everything (/*).")
def invalidate(paths: tuple[str, ...], everything: bool) -> None:
    """Queue CDN purges of PATH... (wildcards allowed) or --all; `flush` or beat sends them."""
    if bool(paths) == everything:
        raise InvalidInput("give one or more paths, or --all")
    manager = get_cdn_manager()
    if everything:
        manager.invalidate_all()
        click.echo("queued: /*")
    else:
        new = manager.queue_invalidation(paths)
        click.echo(f"queued {new} new path(s), {len(paths) - new} already pending")


@cdn.command()
def flush() -> None:
    """Send the queued purges to the configured CDN now."""
    result = get_cdn_manager().flush_invalidations()
    if result.skipped:
        click.echo("another flush is running; nothing done")
        return
    click.echo(f"purged {len(result.purged)} path(s) in {result.calls} call(s)")
    if result.error:
        raise SluiceError(f"{result.error} ({len(result.requeued)} path(s) re-queued)")
