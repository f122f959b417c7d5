"""The embedded default provider: offline, deterministic, and free.

Python is parsed with :mod:`ast`; other languages get a smaller regex rule set. Embeddings are
feature-hashed token vectors, and chat answers summarise an analysis of the code they contain.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sluice.ai.base import (
    SEVERITIES,
    AnalysisResult,
    Completion,
    EmbeddingResult,
    Finding,
    Usage,
    sort_findings,
    source_digest,
)
from sluice.ai.featurehash import hash_embed
from sluice.ai.inputs import check_code, check_messages, check_texts, estimate_tokens, message_text
from sluice.ai.languages import normalize_language
from sluice.ai.pattern_rules import common_findings, pattern_findings, todo_finding
from sluice.ai.python_rules import check_python
from sluice.ai.rules import select_rules
from sluice.errors import InvalidInput

DEFAULT_MODEL = "sluice-local-1"
#: Modules that do not shape the local provider's answers (the OpenAI client and its retries).
_NOT_LOCAL = frozenset({"__init__.py", "openai.py", "retry.py"})


@functools.cache
def analyzer_version() -> str:
    """A digest of the local analyzer's code: its rules, detectors and language handling.

    Any change to them changes every analysis cache key, so an upgrade never serves old findings.
    """
    here = Path(__file__).parent
    return source_digest(p for p in here.glob("*.py") if p.name not in _NOT_LOCAL)


@functools.cache
def embedding_version() -> str:
    """A digest of the feature-hashing embedding code."""
    here = Path(__file__).parent
    return source_digest([here / "featurehash.py", here / "inputs.py"])


_FENCE = re.compile(r"```([\w+#.-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)


class LocalProvider:
    """Rule-based analysis and hashing embeddings that need no network or API key.

    ``max_function_statements`` and ``max_line_length`` are the limits of the
    ``quality.long-function`` and ``style.line-too-long`` rules.
    """

    name: str = "local"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dimensions: int = 256,
        max_function_statements: int = 60,
        max_line_length: int = 120,
    ) -> None:
        for option, value in (
            ("dimensions", dimensions),
            ("max_function_statements", max_function_statements),
            ("max_line_length", max_line_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{option} must be a positive int, got {value!r}")
        self.model = model
        self.dimensions = dimensions
        self.embedding_model = f"sluice-hash-{dimensions}"
        self.max_function_statements = max_function_statements
        self.max_line_length = max_line_length

    def __repr__(self) -> str:
        return f"LocalProvider(model={self.model!r}, dimensions={self.dimensions})"

    def cache_identity(self, kind: str) -> dict[str, Any]:
        """See :meth:`AIProvider.cache_identity`."""
        if kind == "embedding":
            return {
                "provider": self.name,
                "model": self.embedding_model,
                "code": embedding_version(),
            }
        if kind in ("analysis", "response"):  # chat answers are analyses too
            return {
                "provider": self.name,
                "model": self.model,
                "rules": analyzer_version(),
                "max_function_statements": self.max_function_statements,
                "max_line_length": self.max_line_length,
            }
        raise InvalidInput(f"unknown result kind {kind!r}; use analysis, embedding or response")

    def analyze(
        self,
        code: str,
        language: str,
        rules: Sequence[str] | None = None,
        model: str | None = None,
    ) -> AnalysisResult:
        """Findings of the selected rules, sorted by line; a parse error is a finding."""
        check_code(code, language)
        _check_model(model, self.model)
        enabled = select_rules(rules)
        language = normalize_language(language)
        lines = code.splitlines()
        findings = list(common_findings(lines, enabled, max_line_length=self.max_line_length))
        if language == "python":
            findings.extend(self._python(code, enabled))
        else:
            findings.extend(pattern_findings(lines, language, enabled))
        result = sort_findings(_deduplicate(findings))
        prompt = estimate_tokens(code)
        completion = sum(estimate_tokens(finding.message) for finding in result)
        return AnalysisResult(
            findings=result,
            language=language,
            model=self.model,
            usage=Usage(prompt, completion, prompt + completion),
        )

    def _python(self, code: str, enabled: frozenset[str]) -> list[Finding]:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError) as exc:
            # ValueError: NUL bytes; RecursionError: absurdly deep nesting. Neither is reviewable.
            reason = exc.msg if isinstance(exc, SyntaxError) else str(exc) or type(exc).__name__
            return [
                Finding(
                    line=getattr(exc, "lineno", None) or 0,
                    column=max(getattr(exc, "offset", None) or 0, 0),
                    rule="syntax.error",
                    severity="high",
                    message=f"the file does not parse ({reason}); the Python rules did not run",
                )
            ]
        findings = check_python(tree, enabled, max_statements=self.max_function_statements)
        if "style.todo" in enabled:
            for line, column, comment in _comments(code):
                found = todo_finding(line, column, comment)
                if found:
                    findings.append(found)
        return findings

    def embed(self, texts: Sequence[str], model: str | None = None) -> EmbeddingResult:
        """One L2-normalised hashing vector per text (all zeros for a text without tokens)."""
        batch = check_texts(texts)
        _check_model(model, self.embedding_model)
        tokens = sum(estimate_tokens(text) for text in batch)
        return EmbeddingResult(
            vectors=[hash_embed(text, self.dimensions) for text in batch],
            model=self.embedding_model,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        **params: Any,
    ) -> Completion:
        """Review the code in the last user message, or explain how to ask for a review.

        ``max_tokens`` truncates the answer (finish_reason ``"length"``); other params are accepted
        for compatibility and ignored, since the answer is deterministic anyway.
        """
        history = check_messages(messages)
        _check_model(model, self.model)
        max_tokens = params.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidInput(f"max_tokens must be a positive int, got {max_tokens!r}")
        question = next((message_text(m) for m in reversed(history) if m.get("role") == "user"), "")
        text, finish_reason = self._answer(question), "stop"
        if max_tokens is not None and estimate_tokens(text) > max_tokens:
            text, finish_reason = text[: max_tokens * 4], "length"
        prompt = sum(estimate_tokens(message_text(message)) for message in history)
        completion = estimate_tokens(text)
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(prompt, completion, prompt + completion),
            finish_reason=finish_reason,
        )

    def _answer(self, question: str) -> str:
        code, language = _extract_code(question)
        if code is None:
            return (
                f"{self.model} is sluice's offline reviewer: it answers by analysing code. "
                "Send the code in a fenced block (```python ... ```) to get its findings. "
                f"Your message was: {question.strip()[:200]!r}"
            )
        findings = self.analyze(code, language).findings
        if not findings:
            return f"No issues found in this {language} code."
        counts = ", ".join(
            f"{sum(f.severity == level for f in findings)} {level}"
            for level in SEVERITIES
            if any(f.severity == level for f in findings)
        )
        lines = [f"Found {len(findings)} issue(s) in this {language} code ({counts}):"]
        lines += [f"- line {f.line} [{f.severity}] {f.rule}: {f.message}" for f in findings]
        return "\n".join(lines)


def _check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise InvalidInput(
            f"the local provider serves {served!r}, not {requested!r}; omit model= "
            "or set SLUICE_AI_PROVIDER=openai to use other models"
        )


def _deduplicate(findings: list[Finding]) -> list[Finding]:
    """Keep the most severe finding per position and rule: one defect reported twice is noise.

    A secret is one per line: the name rule and the key-shape rule often flag the same literal.
    """
    best: dict[tuple[int, int, str], Finding] = {}
    for finding in findings:
        column = 0 if finding.rule == "security.hardcoded-secret" else finding.column
        key = (finding.line, column, finding.rule)
        kept = best.get(key)
        if kept is None or SEVERITIES.index(finding.severity) < SEVERITIES.index(kept.severity):
            best[key] = finding
    return list(best.values())


def _comments(code: str) -> Iterator[tuple[int, int, str]]:
    """``(line, 1-based column, text)`` of every comment; tokenizing skips strings for free."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.COMMENT:
                yield token.start[0], token.start[1] + 1, token.string
    except (tokenize.TokenError, SyntaxError):
        return


def _extract_code(text: str) -> tuple[str | None, str]:
    """The first fenced code block and its language, else the whole text if it is Python."""
    fence = _FENCE.search(text)
    if fence:
        code = fence.group(2)
        if fence.group(1):
            return code, normalize_language(fence.group(1))
        return code, "python" if _is_python(code) else "text"
    return (text, "python") if "\n" in text.strip() and _is_python(text) else (None, "text")


def _is_python(text: str) -> bool:
    """True when ``text`` parses and is more than bare expressions (prose rarely is)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return False
    return any(not isinstance(statement, ast.Expr) for statement in tree.body)
