"""``sluice db report`` and ``sluice db seed``: click commands the ``db`` group attaches."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sluice.clitools import SafeConsole
from sluice.errors import SluiceError

console = SafeConsole()


@click.command("report")
@click.option(
    "--threshold-ms",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Statements at least this slow are explained and indexed for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report(threshold_ms: float, as_json: bool) -> None:
    """Run the dashboard queries through the optimizer and print its report.

    Statistics live in each process, so the report probes the platform's dashboard queries
    (sluice/db/dashboard.py) against the configured database: their timings, the slowest with
    their plans, the cache's cluster-wide counters and validated index recommendations. With
    pg_stat_statements on the server, the workload section ranks every client's statements by
    total time and advises indexes weighted by the time they would save; without it, it says so
    and ranks what this command ran.
    """
    from sluice.db import dashboard, get_engine
    from sluice.query import QueryOptimizer

    try:
        engine = get_engine()
        optimizer = QueryOptimizer(engine, slow_threshold_ms=threshold_ms)
        try:
            with engine.connect() as conn:
                params = dashboard.sample_params(conn)
            for name, query in dashboard.QUERIES.items():
                optimizer.execute_query_sync(
                    query.sql_for(engine.dialect.name), params[name], use_cache=False
                )
            result = optimizer.get_optimization_report()
            result["workload"] = optimizer.get_workload_report()
        finally:
            optimizer.close()
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    _print_report(result)


def _print_report(result: dict[str, Any]) -> None:
    summary = Table(title="query optimization", show_header=False)
    for section in ("cache_stats", "query_stats"):
        for key, value in result[section].items():
            summary.add_row(f"{section.split('_')[0]}: {key}", str(value))
    console.print(summary)
    slow = Table(title="slowest queries")
    for column in ("fingerprint", "calls", "mean ms", "p95 ms", "max ms", "plan", "query"):
        slow.add_column(column, overflow="fold")
    for row in result["top_slow_queries"]:
        slow.add_row(row["fingerprint"], str(row["calls"]), f"{row['mean_ms']:.2f}",
                     f"{row['p95_ms']:.2f}", f"{row['max_ms']:.2f}", row["plan"] or "-",
                     row["query"][:120])  # fmt: skip
    console.print(slow)
    advice = Table(title="index recommendations")
    for column in ("table", "columns", "improvement %", "method", "statement"):
        advice.add_column(column, overflow="fold")
    for row in result["index_recommendations"]:
        improvement = f"{row['estimated_improvement']:.1f}"
        columns = ", ".join(row["columns"])
        advice.add_row(
            row["table_name"], columns, improvement, row["method"], row["create_statement"]
        )
    console.print(advice)
    _print_workload(result["workload"])


def _print_workload(workload: dict[str, Any]) -> None:
    statements = Table(title=f"workload ({workload['source']}): {workload['note']}")
    for column in ("calls", "total ms", "mean ms", "query"):
        statements.add_column(column, overflow="fold")
    for row in workload["statements"]:
        statements.add_row(str(row["calls"]), f"{row['total_ms']:.1f}", f"{row['mean_ms']:.2f}",
                           row["query"][:120])  # fmt: skip
    console.print(statements)
    advice = Table(title="workload index recommendations (by time saved)")
    for column in ("table", "columns", "calls", "saved ms", "improvement %", "statement"):
        advice.add_column(column, overflow="fold")
    for row in workload["index_recommendations"]:
        advice.add_row(row["table_name"], ", ".join(row["columns"]), str(row["calls"]),
                       f"{row['estimated_time_saved_ms']:.1f}",
                       f"{row['estimated_improvement']:.1f}", row["create_statement"])  # fmt: skip
    console.print(advice)


@click.command("seed")
@click.option(
    "--results",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many code_review_results; every other table scales with it.",
)
@click.option("--seed", "seed_value", default=42, show_default=True, help="Random seed.")
def seed(results: int, seed_value: int) -> None:
    """Fill the migrated database with realistic, skewed data."""
    from sluice.db import get_engine
    from sluice.db import seed as seeding

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    tasks: dict[str, Any] = {}
    try:
        with Progress(*columns, console=console) as bar:

            def progress(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = bar.add_task(table, total=total)
                bar.update(tasks[table], completed=done)

            plan = seeding.seed(get_engine(), results, seed_value, progress)
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(
        f"seeded {plan.users} users, {plan.projects} projects, {plan.sessions} sessions, "
        f"{plan.results} results, {plan.audit} audit entries"
    )
