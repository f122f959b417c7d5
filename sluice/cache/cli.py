"""``sluice cache stats`` and ``sluice cache clear [--type TYPE]``."""

from __future__ import annotations

import click
from rich.table import Table

from sluice.cache.ai_cache import get_ai_cache
from sluice.cache.policy import CONTENT_TYPES
from sluice.clitools import SafeConsole, SluiceGroup

console = SafeConsole()


@click.group("cache", cls=SluiceGroup)
def cache() -> None:
    """The AI result cache (L1 memory + L2 shared store)."""


@cache.command("stats")
def stats() -> None:
    """Print the cache's cluster-wide counters."""
    data = get_ai_cache().get_stats()
    table = Table(title="AI result cache", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    g, s, l1, l2 = data["global"], data["savings_estimate"], data["l1"], data["l2"]
    table.add_row("enabled", str(data["enabled"]))
    table.add_row("hits", str(g["hits"]))
    table.add_row("misses", str(g["misses"]))
    table.add_row("hit rate", f"{g['hit_rate']:.0%}")
    table.add_row("ai calls saved", str(s["ai_calls_saved"]))
    table.add_row("cost saved", f"${s['estimated_cost_saved_usd']:.4f}")
    table.add_row("l1 size", str(l1["size"]))
    table.add_row("l1 memory", f"{l1['memory_usage_bytes']} bytes")
    table.add_row("l2 hits", str(l2["hits"]))
    table.add_row("l2 misses", str(l2["misses"]))
    table.add_row("l2 errors", str(l2["errors"]))
    table.add_row("l2 lost writes", str(l2["lost_writes"]))
    table.add_row("l2 circuit", str(l2["circuit"]))
    table.add_row("cluster-wide", str(data["cluster_wide"]))
    console.print(table)
    by_type = Table(title="By content type", title_justify="left")
    events = (
        "l1_hits",
        "l2_hits",
        "misses",
        "provider_calls",
        "sets",
        "lost_writes",
        "too_large",
        "corrupt",
    )
    by_type.add_column("type")
    for event in events:
        by_type.add_column(event.replace("_", " "), justify="right")
    for content_type in CONTENT_TYPES:
        counts = data["by_type"][content_type]
        by_type.add_row(content_type, *(str(counts[e]) for e in events))
    console.print(by_type)


@cache.command("clear")
@click.option(
    "--type",
    "content_type",
    type=click.Choice(CONTENT_TYPES),
    default=None,
    help="Only this content type (default: every type).",
)
def clear(content_type: str | None) -> None:
    """Invalidate cached results (a version bump seen by every process, not FLUSHDB)."""
    target = get_ai_cache()
    if content_type is None:
        target.invalidate_all()
        console.print("cleared every cached AI result")
    else:
        target.invalidate_type(content_type)
        console.print(f"cleared cached {content_type} results")
