"""Line-by-line regex rules: the whole rule set for languages without a parser here, and the
language-independent checks (credential shapes, long lines) for Python too.

Regexes cannot see syntax, so each pattern is anchored on a call or assignment shape that rarely
appears by accident; they trade some recall for few false positives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sluice.ai.base import Finding
from sluice.ai.detectors import (
    SQL_TEXT,
    TODO_TEXT,
    key_shapes,
    looks_like_secret_name,
    looks_like_secret_value,
)
from sluice.ai.rules import RULES


@dataclass(frozen=True)
class PatternRule:
    """A regex that flags a line of code in one of ``languages``."""

    rule: str
    languages: frozenset[str]
    pattern: re.Pattern[str]
    message: str


_JS = frozenset({"javascript", "typescript"})
_WEB = _JS | {"html"}
_JVM = frozenset({"java", "kotlin", "scala"})

PATTERNS: tuple[PatternRule, ...] = (
    PatternRule(
        "security.eval",
        _WEB,
        re.compile(r"(?<![\w.$])eval\s*\(|\bnew\s+Function\s*\("),
        "eval()/new Function() runs a string as code; parse data with JSON.parse instead",
    ),
    PatternRule(
        "security.eval",
        frozenset({"php"}),
        re.compile(r"(?<![\w>$:])(?:eval|create_function)\s*\("),
        "eval() runs a string as PHP code",
    ),
    PatternRule(
        "security.eval",
        frozenset({"ruby"}),
        re.compile(r"(?<![\w.])(?:eval|instance_eval|class_eval)\b"),
        "eval runs a string as Ruby code",
    ),
    PatternRule(
        "security.xss",
        _WEB,
        re.compile(r"\.(?:inner|outer)HTML\s*\+?=(?!=)|\bdocument\.write(?:ln)?\s*\("),
        "writing a string as HTML allows cross-site scripting; use textContent or sanitise it",
    ),
    PatternRule(
        "security.command-injection",
        _JS,
        re.compile(r"(?:\bchild_process\.|(?<![\w.$]))exec(?:Sync)?\s*\("),
        "child_process.exec runs the command through the shell; use execFile with an argument list",
    ),
    PatternRule(
        "security.command-injection",
        frozenset({"php"}),
        re.compile(r"(?<![\w>$:])(?:exec|system|shell_exec|passthru|popen|proc_open)\s*\("),
        "the command runs through the shell; escape every argument with escapeshellarg()",
    ),
    PatternRule(
        "security.command-injection",
        frozenset({"c", "cpp"}),
        re.compile(r"(?<![\w.>:])(?:std::)?(?:system|popen)\s*\("),
        "system()/popen() run the command through /bin/sh; use fork + execv with an argv array",
    ),
    PatternRule(
        "security.command-injection",
        frozenset({"ruby"}),
        re.compile(r"(?<![\w.])(?:system|exec|spawn)\s*\(|%x[({\[]|`[^`]*#\{"),
        "the command runs through the shell; pass the program and arguments separately",
    ),
    PatternRule(
        "security.command-injection",
        frozenset({"go"}),
        re.compile(r'exec\.Command(?:Context)?\([^)]*"(?:/bin/)?(?:sh|bash)"\s*,\s*"-c"'),
        "running sh -c hands the command to the shell; exec the program with its arguments",
    ),
    PatternRule(
        "security.command-injection",
        _JVM,
        re.compile(r"Runtime\.getRuntime\(\)\.exec\s*\("),
        "Runtime.exec with a single string splits it naively; use ProcessBuilder with a list",
    ),
    PatternRule(
        "security.deserialization",
        frozenset({"php"}),
        re.compile(r"(?<![\w>$:])unserialize\s*\("),
        "unserialize() on untrusted data can instantiate arbitrary objects; use json_decode",
    ),
    PatternRule(
        "security.deserialization",
        _JVM,
        re.compile(r"\bnew\s+ObjectInputStream\s*\("),
        "Java deserialisation of untrusted data can run code; use a data-only format",
    ),
    PatternRule(
        "security.deserialization",
        frozenset({"ruby"}),
        re.compile(r"\bMarshal\.load\b|\bYAML\.load\s*\("),
        "Marshal.load/YAML.load can build arbitrary objects; use JSON or YAML.safe_load",
    ),
)

# Values spliced into a string: concatenation, ${...}/#{...}/{$...} templates, PHP "$var", printf.
_INTERPOLATION = re.compile(
    r"[\"'`]\s*(?:\+\s*[\w$(]|\.\s*\$)|(?:[\w$)\]]\s*\+|\$\w+\s*\.)\s*[\"'`]"
    r"|\$\{|#\{|\{\$|\"[^\"\n]*\$[A-Za-z_]|\b(?:Sprintf|sprintf|[Ff]ormat)\s*\("
)
_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z_$][\w$]*)[\"']?\s*(?::=|=>|=|:)\s*[\"'](?P<value>[^\"'\n]+)[\"']"
)
_COMMENT_TODO = re.compile(r"(?://|#|/\*|<!--|--|^\s*\*).*?" + TODO_TEXT.pattern)


def _finding(
    rule: str, line: int, column: int, message: str, severity: str | None = None
) -> Finding:
    return Finding(
        line=line,
        column=column,
        rule=rule,
        severity=severity or RULES[rule].severity,
        message=message,
    )


def common_findings(
    lines: Iterable[str], enabled: frozenset[str], *, max_line_length: int
) -> Iterator[Finding]:
    """Rules that hold in every language: credential shapes and over-long lines."""
    for number, line in enumerate(lines, start=1):
        if "security.hardcoded-secret" in enabled:
            for column, description in key_shapes(line):
                yield _finding(
                    "security.hardcoded-secret",
                    number,
                    column + 1,
                    f"{description} is in the source; revoke it and load it from a secret store",
                    severity="critical",
                )
        if "style.line-too-long" in enabled and len(line) > max_line_length:
            yield _finding(
                "style.line-too-long",
                number,
                max_line_length + 1,
                f"line is {len(line)} characters long (limit {max_line_length})",
            )


def todo_finding(line: int, column: int, comment: str) -> Finding | None:
    """A ``style.todo`` finding if ``comment`` holds a TODO-style marker."""
    match = TODO_TEXT.search(comment)
    if match is None:
        return None
    text = comment[match.start() :].strip()
    return _finding("style.todo", line, column, f"{match.group(1)} comment: {text[:100]}")


def pattern_findings(
    lines: Iterable[str], language: str, enabled: frozenset[str]
) -> Iterator[Finding]:
    """The regex rules for ``language`` (unknown languages get secrets and TODO checks only)."""
    rules = [rule for rule in PATTERNS if language in rule.languages and rule.rule in enabled]
    for number, line in enumerate(lines, start=1):
        for rule in rules:
            match = rule.pattern.search(line)
            if match:
                yield _finding(rule.rule, number, match.start() + 1, rule.message)
        if "security.sql-injection" in enabled:
            sql = SQL_TEXT.search(line)
            if sql and _INTERPOLATION.search(line):
                yield _finding(
                    "security.sql-injection",
                    number,
                    sql.start() + 1,
                    "SQL is built by splicing values into a string; use a parameterised query",
                )
        if "security.hardcoded-secret" in enabled:
            for match in _ASSIGNMENT.finditer(line):
                name = match.group("name")
                if looks_like_secret_name(name) and looks_like_secret_value(match.group("value")):
                    yield _finding(
                        "security.hardcoded-secret",
                        number,
                        match.start() + 1,
                        f"hard-coded secret in {name!r}; load it from the environment",
                    )
        if "style.todo" in enabled:
            comment = _COMMENT_TODO.search(line)
            if comment:
                found = todo_finding(number, comment.start() + 1, line[comment.start() :])
                if found:
                    yield found
