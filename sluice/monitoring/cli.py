"""``sluice serve`` and ``sluice stats`` (registered on the main command group by :mod:`sluice.cli`)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from sluice.clitools import SafeConsole

console = SafeConsole()


@click.command("serve")
@click.option(
    "--host",
    default=None,
    show_default="127.0.0.1, or SLUICE_SERVE_HOST",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None,
    show_default="8000, or SLUICE_SERVE_PORT", help="0 picks a free port (printed at start).",
)  # fmt: skip
def serve(host: str | None, port: int | None) -> None:
    """Serve /health, /metrics (Prometheus) and /stats (JSON) over HTTP until interrupted."""
    from sluice.monitoring.logs import configure_logging
    from sluice.monitoring.server import make_server
    from sluice.settings import get_settings

    configure_logging()
    settings = get_settings()
    server = make_server(
        settings.serve_host if host is None else host,
        settings.serve_port if port is None else port,
    )
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"sluice serving on http://{bound_host!s}:{bound_port}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def stats(as_json: bool) -> None:
    """Every capability's cluster-wide stats: cache, queue, query optimizer, CDN."""
    from sluice.monitoring.stats import collect_stats

    report = collect_stats()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for section, values in report.items():
        table = Table(title=section, title_justify="left", show_header=False)
        table.add_column("stat")
        table.add_column("value", overflow="fold")
        for key, value in _flatten(values):
            table.add_row(key, _format(value))
        console.print(table)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as ``a.b.c`` rows, so every stat gets one line."""
    rows: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)
