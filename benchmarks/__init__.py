"""Benchmarks against the guide's anchors; each prints times and ratios."""

import compileall
from pathlib import Path

# The `sluice` processes a benchmark starts are measured as installed: a wheel ships its modules
# compiled, but an editable install under PYTHONDONTWRITEBYTECODE=1 (CI shells, containers)
# compiles the whole package again in every process, 0.15 s of each command.
compileall.compile_dir(Path(__file__).resolve().parent.parent / "sluice", quiet=1)
