"""``--format sarif``: SARIF 2.1.0 for GitHub code scanning and other CI dashboards.

Each finding is a result with its rule (metadata from the rule catalogue in ``tool.driver.rules``), a
level from its severity, a location relative to the reviewed root (``%SRCROOT%``) and a
``partialFingerprints`` entry that does not depend on the line number, so a dashboard tracks the same
finding across runs while code above it moves.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sluice.ai.rules import RULES
from sluice.analysis.review import Review

SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
#: SARIF ``level`` of each severity.
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
#: GitHub's ``security-severity`` scale (0-10) for security rules, by severity.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.5"}
FINGERPRINT_KEY = "sluiceFinding/v1"


def _tool_version() -> str:
    try:
        return version("sluice")
    except PackageNotFoundError:
        return "0"


def _rule_descriptor(rule_id: str, severity: str) -> dict[str, Any]:
    rule = RULES.get(rule_id)
    default = rule.severity if rule else severity
    category = rule_id.partition(".")[0]
    properties: dict[str, Any] = {"tags": [category]}
    if category == "security":
        properties["security-severity"] = SECURITY_SEVERITY[default]
    return {
        "id": rule_id,
        "name": rule_id.replace(".", "/"),
        "shortDescription": {"text": rule.description if rule else rule_id},
        "defaultConfiguration": {"level": LEVELS[default]},
        "properties": properties,
    }


def _fingerprint(finding: dict[str, Any], occurrence: int) -> str:
    """Rule, file, message and the how-many-th such finding in the file: not the line."""
    text = "\0".join((finding["rule"], finding["path"], finding["message"], str(occurrence)))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def to_sarif(review: Review) -> dict[str, Any]:
    """The review as a SARIF 2.1.0 log (a JSON-ready dict)."""
    rule_ids = sorted(set(RULES) | {f["rule"] for f in review.findings})
    severity_of = {f["rule"]: f["severity"] for f in review.findings}
    rules = [_rule_descriptor(rule_id, severity_of.get(rule_id, "info")) for rule_id in rule_ids]
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    seen: Counter[tuple[str, str, str]] = Counter()
    results = []
    for finding in sorted(review.findings, key=lambda f: (f["path"], f["line"], f["rule"])):
        key = (finding["rule"], finding["path"], finding["message"])
        seen[key] += 1
        region: dict[str, int] = {"startLine": max(1, int(finding["line"]))}
        if finding.get("column"):
            region["startColumn"] = int(finding["column"]) + 1
        results.append(
            {
                "ruleId": finding["rule"],
                "ruleIndex": index[finding["rule"]],
                "level": LEVELS[finding["severity"]],
                "message": {"text": finding["message"]},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {
                                "uri": quote(finding["path"], errors="surrogateescape"),
                                "uriBaseId": "SRCROOT",
                            },
                            "region": region,
                        }
                    }
                ],
                "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(finding, seen[key])},
                "properties": {"severity": finding["severity"]},
            }
        )
    root = Path(review.root).resolve()
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "sluice",
                "version": _tool_version(),
                "rules": rules,
            }
        },
        "originalUriBaseIds": {
            "SRCROOT": {"uri": (root if root.is_dir() else root.parent).as_uri() + "/"}
        },
        "invocations": [
            {
                "executionSuccessful": not review.failed,
                "toolExecutionNotifications": [
                    {"level": "error", "message": {"text": f"{path}: {error}"}}
                    for path, error in review.failed
                ],
            }
        ],
        "results": results,
        "properties": {
            "sessionId": review.session_id,
            "provider": review.provider,
            "model": review.model,
        },
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
