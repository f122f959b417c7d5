"""``--format json``: the review as one JSON document (stable keys, for scripts and dashboards)."""

from __future__ import annotations

import json
from dataclasses import asdict

from sluice.analysis.review import Review

#: Bumped when a key changes meaning or disappears.
SCHEMA_VERSION = 1


def to_json(review: Review) -> str:
    """The review as indented JSON text."""
    document = asdict(review)
    document["failed"] = [{"path": path, "error": error} for path, error in review.failed]
    document["findings_total"] = len(review.findings)
    return json.dumps({"schema_version": SCHEMA_VERSION, **document}, indent=2, ensure_ascii=False)
