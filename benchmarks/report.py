"""What every benchmark returns, and the one printer, Markdown writer and plot they share.

A benchmark module exposes ``run(quick: bool) -> list[Measurement]``; its own ``main()`` prints the
list with :func:`print_table`, and ``python -m benchmarks`` prints all of them as one table, then
writes :func:`markdown` and :func:`plot`. Nothing is asserted: ``met`` only reports the goal.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    """One measured figure of sluice, with the anchor measured in the same run.

    ``ratio`` defaults to ``value / anchor_value``; a benchmark passes its own when the goal is
    phrased the other way round (e.g. "x faster" = anchor time / sluice time). ``samples`` and
    ``anchor_samples`` (in ``unit``) feed the latency plot.
    """

    section: str
    metric: str
    value: float
    unit: str
    target: str = ""
    anchor: str = ""
    anchor_value: float | None = None
    ratio: float | None = None
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list, repr=False)
    anchor_samples: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.ratio is None and self.anchor_value:
            self.ratio = self.value / self.anchor_value


def number(value: float | None, unit: str = "") -> str:
    """A figure with a precision that suits its size, and its unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    size = abs(value)
    if float(value).is_integer() and size < 1000:
        text = str(int(value))
    elif size >= 1000:
        text = f"{value:,.0f}"
    elif size >= 100:
        text = f"{value:.0f}"
    elif size >= 10:
        text = f"{value:.1f}"
    elif size >= 1 or size == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}x" if 0.99 <= ratio <= 1.01 and ratio != 1 else f"{number(ratio)}x"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


COLUMNS = ("section", "metric", "target", "anchor (same run)", "sluice", "ratio", "met")


def rows(measurements: Iterable[Measurement]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for m in measurements:
        anchor = f"{m.anchor}: {number(m.anchor_value, m.unit)}" if m.anchor else "-"
        metric = f"{m.metric} ({m.note})" if m.note else m.metric
        out.append(
            (
                m.section,
                metric,
                m.target or "-",
                anchor,
                number(m.value, m.unit),
                ratio_text(m.ratio),
                met_text(m.met),
            )
        )
    return out


def print_table(measurements: Sequence[Measurement], title: str) -> None:
    """The one console table every benchmark prints."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("sluice", "ratio") else "left")
    for values in rows(measurements):
        table.add_row(*values)
    Console(width=max(160, Console().width)).print(table)


# -- the machine --------------------------------------------------------------------------------


def machine(redis_url: str, database_url: str) -> dict[str, str]:
    """CPU, cores, memory, OS, Python, Redis and PostgreSQL versions, date, commit."""
    info: dict[str, str] = {}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["CPU"] = cpu
    info["cores"] = f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)"
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        info["memory"] = "-"
    os_name = platform.platform()
    try:
        release = dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        os_name = f"{release.get('PRETTY_NAME', '').strip(chr(34))}, {platform.system()} {platform.release()}"
    except OSError:
        pass
    info["OS"] = os_name
    info["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    info["Redis"] = _redis_version(redis_url)
    info["PostgreSQL"] = _postgres_version(database_url)
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sluice"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        info["sluice commit"] = (commit + (" (sluice/ modified)" if dirty else "")) or "-"
    except OSError:
        info["sluice commit"] = "-"
    return info


def _redis_version(url: str) -> str:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2)
        server: Any = client.info("server")
        version = str(server["redis_version"])
        client.close()
        return version
    except Exception as exc:  # unreachable: say so in the report
        return f"unavailable ({type(exc).__name__})"


def _postgres_version(url: str) -> str:
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
        engine.dispose()
        return version
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


# -- Markdown and plot --------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(
    measurements: Sequence[Measurement],
    info: dict[str, str],
    *,
    command: str,
    notes: Sequence[str] = (),
    plot_name: str | None = None,
) -> str:
    lines = [
        "# sluice benchmark results",
        "",
        f"Generated by `{command}`; every anchor was measured in the same run on the same machine. "
        "Nothing here is asserted; *met* says whether the figure reaches the goal stated in the "
        'guide\'s "Expected Results" table or in the issue that specified the capability.',
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {key} | {_cell(value)} |" for key, value in info.items()),
        "",
        "## Results",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---:" if c in ("sluice", "ratio") else "---" for c in COLUMNS) + " |",
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows(measurements)),
        "",
    ]
    misses = [m for m in measurements if m.met is False]
    if misses:
        lines += ["## Goals missed", ""]
        lines += [
            f"- {m.section}: {m.metric}: {number(m.value, m.unit)} (target {m.target})"
            for m in misses
        ]
        lines.append("")
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    if plot_name:
        lines += ["## Plot", "", f"![latency distributions and throughput]({plot_name})", ""]
    return "\n".join(lines)


def _to_ms(values: list[float], unit: str) -> list[float]:
    scale = {"µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit)
    return [v * scale for v in values] if scale else []


def plot(measurements: Sequence[Measurement], path: Path, title: str) -> None:
    """Latency distributions (box plots, log scale) and throughputs (bars) of sluice and anchors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes: list[tuple[str, list[float], str]] = []
    for m in measurements:
        ours = _to_ms(m.samples, m.unit)
        if ours:
            anchor = _to_ms(m.anchor_samples, m.unit)
            if anchor:
                boxes.append((f"{m.anchor} (anchor)", anchor, "tab:gray"))
            boxes.append((f"{m.section}: {m.metric}", ours, "tab:blue"))
    rates = [m for m in measurements if m.unit.endswith("/s")]

    height = max(4.0, 0.32 * max(len(boxes), 2 * len(rates)) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(17, height), width_ratios=(1, 1))
    if boxes:
        parts = left.boxplot(
            [b[1] for b in boxes], vert=False, whis=(5, 95), showfliers=False, patch_artist=True
        )
        for patch, (_, _, colour) in zip(parts["boxes"], boxes, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        left.set_yticks(range(1, len(boxes) + 1), [b[0] for b in boxes], fontsize=7)
        left.set_xscale("log")
        left.set_xlabel("latency per operation (ms, log scale; box 25-75%, whiskers 5-95%)")
        left.invert_yaxis()
    left.set_title("Latency distributions (blue: sluice, grey: anchor)")
    if rates:
        labels = [f"{m.section}: {m.metric} [{m.unit}]" for m in rates]
        y = list(range(len(rates)))
        right.barh(
            [i - 0.2 for i in y],
            [m.value for m in rates],
            height=0.4,
            label="sluice",
            color="tab:blue",
        )
        right.barh(
            [i + 0.2 for i in y],
            [m.anchor_value or 0 for m in rates],
            height=0.4,
            label="anchor",
            color="tab:gray",
        )
        right.set_yticks(y, labels, fontsize=7)
        right.set_xscale("log")
        right.set_xlabel("throughput (log scale)")
        right.invert_yaxis()
        right.legend(loc="lower right")
    right.set_title("Throughput")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
