"""Benchmarks against the guide's anchors; each prints times and ratios."""
