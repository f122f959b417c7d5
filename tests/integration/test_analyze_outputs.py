"""``sluice analyze`` as a CI step: JSON and SARIF out, an exit code to gate a merge, reviewing just a
change (``--since``), and past sessions read back (``sluice sessions``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import EXAMPLES, run_sluice, service_env

SCHEMA = json.loads((Path(__file__).parent.parent / "data" / "sarif-schema-2.1.0.json").read_text())


def _inline(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Inline mode: the same handlers and database writes, no worker start-up per test."""
    return service_env(tmp_path, ASYNC_PROCESSING_ENABLED="false", **extra)


@pytest.fixture(scope="module")
def examples_sarif(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sarif")
    result = run_sluice("analyze", str(EXAMPLES), "--format", "sarif", env=_inline(tmp))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # stdout is the document and nothing else


def test_sarif_of_the_examples_is_valid_against_the_oasis_schema(examples_sarif: dict) -> None:
    jsonschema.validate(examples_sarif, SCHEMA)
    [run] = examples_sarif["runs"]
    assert examples_sarif["version"] == "2.1.0"
    assert run["results"], "the examples have real problems in them"


def test_sarif_carries_rules_levels_locations_and_fingerprints(examples_sarif: dict) -> None:
    [run] = examples_sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert {"security.eval", "security.sql-injection"} <= {r["id"] for r in rules}
    assert all(r["shortDescription"]["text"] and r["defaultConfiguration"]["level"] for r in rules)
    fingerprints = set()
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note"}
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uriBaseId"] == "SRCROOT"
        assert (EXAMPLES / location["artifactLocation"]["uri"]).is_file()
        assert location["region"]["startLine"] >= 1
        fingerprints.add(result["partialFingerprints"]["sluiceFinding/v1"])
    assert len(fingerprints) == len(run["results"]), "every finding is told apart"
    levels = {r["properties"]["severity"]: r["level"] for r in run["results"]}
    assert levels.get("high") == "error"


def test_fingerprints_survive_code_moving_down(tmp_path: Path) -> None:
    """A dashboard tracks a finding across runs: a line added above it changes its line, not its
    fingerprint."""
    tree = tmp_path / "tree"
    tree.mkdir()
    source = tree / "app.py"
    source.write_text("def run(cmd):\n    return eval(cmd)\n")
    first = run_sluice("analyze", str(tree), "--format", "sarif", env=_inline(tmp_path))
    source.write_text('"""Moved down."""\n\n\ndef run(cmd):\n    return eval(cmd)\n')
    second = run_sluice("analyze", str(tree), "--format", "sarif", env=_inline(tmp_path))

    def eval_results(output: str) -> list[dict[str, Any]]:
        return [
            r for r in json.loads(output)["runs"][0]["results"] if r["ruleId"] == "security.eval"
        ]

    def start_line(result: dict[str, Any]) -> int:
        return int(result["locations"][0]["physicalLocation"]["region"]["startLine"])

    [before], [after] = eval_results(first.stdout), eval_results(second.stdout)
    assert (start_line(before), start_line(after)) == (2, 5)
    assert before["partialFingerprints"] == after["partialFingerprints"]


def test_json_output_to_a_file_matches_the_stored_findings(tmp_path: Path) -> None:
    target = tmp_path / "review.json"
    env = _inline(tmp_path)
    result = run_sluice(
        "analyze", str(EXAMPLES), "--format", "json", "--output", str(target), env=env
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(target.read_text())
    assert document["schema_version"] == 1
    assert document["findings_total"] == len(document["findings"]) > 0
    assert sum(document["by_severity"].values()) == document["findings_total"]
    assert {"path", "line", "column", "severity", "rule", "message"} <= set(document["findings"][0])
    assert "findings total" in result.stdout  # the summary still reaches the terminal
    assert document["run"]["mode"].startswith("inline") and document["run"]["provider_calls"] >= 0
    shown = run_sluice("sessions", "show", str(document["session_id"]), "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["findings"] == document["findings"]


@pytest.mark.parametrize(
    "threshold,expected",
    [("critical", 0), ("high", 3), ("info", 3)],
)
def test_fail_on_gates_on_severity_with_its_own_exit_code(
    tmp_path: Path, threshold: str, expected: int
) -> None:
    """The examples have high findings but no critical one."""
    result = run_sluice(
        "analyze", str(EXAMPLES), "--format", "json", "--fail-on", threshold, env=_inline(tmp_path)
    )
    severities = {f["severity"] for f in json.loads(result.stdout)["findings"]}
    assert "critical" not in severities and "high" in severities
    assert result.returncode == expected, result.stderr


def test_exit_codes_are_documented_in_help(tmp_path: Path) -> None:
    result = run_sluice("analyze", "--help", env=service_env(tmp_path))
    assert "--fail-on" in result.stdout
    for line in ("1  a file failed", "2  bad input", "3  a finding at or above --fail-on"):
        assert line in result.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--format", "xml"], "unknown format 'xml'"),
        (["--fail-on", "severe"], "unknown severity 'severe'"),
        (["--rules", "garbage"], "unknown rule 'garbage'"),
        (["--rules", ""], "unknown rule ''"),
        (["--workers", "100000"], "--workers must be between 0 and"),
        (["--output", "/nonexistent-dir/x.json"], "does not exist"),
        (["--changed-lines-only"], "--changed-lines-only needs --since"),
    ],
)
def test_every_option_is_checked_before_any_work(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run_sluice("analyze", str(EXAMPLES), *args, env=service_env(tmp_path), timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    # Refused at start: no session was created and no worker was started.
    assert not (tmp_path / "data" / "logs" / "embedded-worker.log").exists()


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def two_commit_repo(tmp_path: Path) -> Path:
    """First commit: two files with a finding each. Second: one of them gets a new eval()."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "old.py").write_text("def f(cmd):\n    return eval(cmd)\n")
    (repo / "touched.py").write_text("def g(cmd):\n    return eval(cmd)\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "tag", "v1")
    (repo / "touched.py").write_text(
        "def g(cmd):\n    return eval(cmd)\n\n\ndef h(code):\n    return eval(code)\n"
    )
    _git(repo, "commit", "-q", "-am", "second")
    return repo


@pytest.mark.parametrize("revision", ["v1", "main~1", "commit"])
def test_since_reviews_only_files_changed_since_a_revision(
    tmp_path: Path, two_commit_repo: Path, revision: str
) -> None:
    if revision == "commit":
        revision = _git(two_commit_repo, "rev-parse", "HEAD~1")
    (two_commit_repo / "new.py").write_text("import os\nos.system(input())\n")  # untracked: new
    env = _inline(tmp_path)
    result = run_sluice(
        "analyze", str(two_commit_repo), "--since", revision, "--format", "json", env=env
    )
    assert result.returncode == 0, result.stderr
    paths = {f["path"] for f in json.loads(result.stdout)["findings"]}
    assert "old.py" not in paths
    assert "touched.py" in paths
    lines_only = run_sluice(
        "analyze", str(two_commit_repo), "--since", revision, "--changed-lines-only",
        "--format", "json", env=env,
    )  # fmt: skip
    findings = json.loads(lines_only.stdout)["findings"]
    touched = {(f["line"], f["rule"]) for f in findings if f["path"] == "touched.py"}
    assert (6, "security.eval") in touched
    assert (2, "security.eval") not in touched, "line 2 did not change since the revision"


@pytest.mark.parametrize(
    "where,revision,expected",
    [
        ("repo", "no-such-branch", "unknown git revision 'no-such-branch'"),
        ("repo", "--output=x", "--since needs a git revision"),
        ("plain", "HEAD", "is not inside one"),
    ],
)
def test_since_outside_git_or_with_an_unknown_revision_is_one_clear_error(
    tmp_path: Path, two_commit_repo: Path, where: str, revision: str, expected: str
) -> None:
    target = two_commit_repo
    if where == "plain":
        target = tmp_path / "plain"
        target.mkdir()
        (target / "a.py").write_text("x = 1\n")
    result = run_sluice("analyze", str(target), "--since", revision, env=_inline(tmp_path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sessions_list_and_show_read_past_sessions_back(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    extra = {}
    if database == "postgresql":
        extra["SLUICE_DATABASE_URL"] = request.getfixturevalue("pg_schema")
    env = _inline(tmp_path, **extra)
    empty = run_sluice("sessions", "list", env=env)
    assert empty.returncode == 0 and "no analysis sessions" in empty.stdout
    first = json.loads(run_sluice("analyze", str(EXAMPLES), "--format", "json", env=env).stdout)
    second = json.loads(
        run_sluice(
            "analyze", str(EXAMPLES), "--rules", "security", "--format", "json", env=env
        ).stdout
    )
    listed = run_sluice("sessions", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "completed" in line]
    assert [row.split("│")[1].strip() for row in rows] == [
        str(second["session_id"]),
        str(first["session_id"]),
    ]  # newest first
    assert f"{first['findings_total']}" in rows[1] and f"{second['findings_total']}" in rows[0]
    for document in (first, second):
        shown = run_sluice(
            "sessions", "show", str(document["session_id"]), "--format", "json", env=env
        )
        assert shown.returncode == 0, shown.stderr
        stored = json.loads(shown.stdout)
        assert stored["findings"] == document["findings"] and stored["run"] is None
        assert (
            stored["status"] == "completed"
            and stored["files_analysed"] == document["files_analysed"]
        )
    sarif = run_sluice("sessions", "show", str(first["session_id"]), "--format", "sarif", env=env)
    jsonschema.validate(json.loads(sarif.stdout), SCHEMA)
    table = run_sluice("sessions", "show", str(first["session_id"]), env=env)
    assert "security.eval" in table.stdout and "findings total" in table.stdout
    missing = run_sluice("sessions", "show", "999999", env=env)
    assert missing.returncode == 2 and "no analysis session 999999" in missing.stderr


def test_worker_concurrency_setting_is_bounded_by_the_machine(tmp_path: Path) -> None:
    env = service_env(tmp_path, SLUICE_WORKER_CONCURRENCY="10000")
    result = run_sluice("analyze", str(EXAMPLES), env=env, timeout=60)
    assert result.returncode == 1
    assert "SLUICE_WORKER_CONCURRENCY=10000" in result.stderr and "at most" in result.stderr
    assert not (tmp_path / "data" / "logs" / "embedded-worker.log").exists()
