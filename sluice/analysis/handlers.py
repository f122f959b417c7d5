"""The main job's handlers: analysis (HIGH), embedding (BATCH), security alert and session (CRITICAL).

Registered on import; the Celery app's ``include`` list imports this module (through
:mod:`sluice.analysis.tasks`) in every worker, so each is a Celery task ``sluice.handlers.<name>``.
"""

from __future__ import annotations

import logging
from typing import Any

from sluice.errors import InvalidInput, SluiceError
from sluice.settings import get_settings
from sluice.workers import Priority, TaskHandler, registry, submit_task

# sluice.analysis.service (the database layer) and the AI providers are imported where a handler
# first runs: a client that only submits (``sluice analyze`` on external workers) loads these
# handlers for their names and priorities, and needs neither SQLAlchemy nor a provider.

log = logging.getLogger(__name__)
#: How a session ends: every file stored, some failed, or the run was stopped.
SESSION_ENDINGS = ("completed", "failed", "interrupted")


class AnalysisHandler(TaskHandler):
    """Review files and store their findings; raise a security alert for critical ones.

    One payload per file; a chunk of files (``sluice analyze`` sends several per task when the
    provider is fast) is reviewed in one call and stored in one transaction, and a file failing in
    it is retried (and dead-lettered) alone.
    """

    priority = Priority.HIGH
    max_retries = 5
    batch_size = 64

    @property
    def task_name(self) -> str:
        return "analysis"

    def supports_batch(self) -> bool:
        return True

    def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        from sluice.analysis.service import analyze_sources

        outcomes = analyze_sources(payloads)
        for payload, outcome in zip(payloads, outcomes, strict=True):
            critical = outcome.pop("critical", []) if isinstance(outcome, dict) else []
            if critical:
                submit_task(
                    "security_alert",
                    {
                        "session_id": payload["session_id"],
                        "path": payload["path"],
                        "findings": critical,
                    },
                )
        return outcomes

    def dead_letter_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with its text instead of its claim check, while the store still has it:
        a dead letter is kept for weeks, a claim-checked text for a day."""
        if "content_ref" not in payload:
            return payload
        from sluice.analysis.sources import resolve_sources
        from sluice.store import get_store

        try:
            (resolved,) = resolve_sources(get_store(), [payload])
        except SluiceError:  # the store is down: the ref is what there is to keep
            return payload
        return resolved if isinstance(resolved, dict) else payload


class EmbeddingHandler(TaskHandler):
    """Embed files in one provider call per chunk (through the cache) and store the vectors."""

    priority = Priority.BATCH
    batch_size = 64

    @property
    def task_name(self) -> str:
        return "embedding"

    def supports_batch(self) -> bool:
        return True

    def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        from sluice.ai import get_provider
        from sluice.analysis.service import embed_texts, embedding_model, store_embeddings

        settings = get_settings()
        texts = [p["text"] for p in payloads]
        vectors = embed_texts(texts, get_provider(settings), settings)
        stored = [(p, vectors[i][0]) for i, p in enumerate(payloads) if p.get("session_id")]
        if stored:
            store_embeddings(stored, embedding_model(settings))
        return [{"dimensions": len(vector), "cached": cached} for vector, cached in vectors]


class SessionHandler(TaskHandler):
    """Open or close an analysis session for a client that does not reach the database itself
    (``sluice analyze`` on external workers needs only the broker). CRITICAL: the client waits
    for it, so it goes ahead of queued work."""

    priority = Priority.CRITICAL
    max_retries = 2
    backoff = 0.5

    @property
    def task_name(self) -> str:
        return "analysis_session"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        from sluice.analysis import service

        action = payload.get("action")
        if action == "open":
            files_total = payload.get("files_total")
            if not isinstance(files_total, int) or isinstance(files_total, bool) or files_total < 0:
                raise InvalidInput(f"files_total must be an integer >= 0, got {files_total!r}")
            root, provider, model = (_text(payload, name) for name in ("root", "provider", "model"))
            return {"session_id": service.open_session(root, files_total, provider, model)}
        if action == "close":
            session_id, status = payload.get("session_id"), payload.get("status")
            if not isinstance(session_id, int) or isinstance(session_id, bool):
                raise InvalidInput(f"session_id must be an integer, got {session_id!r}")
            if status not in SESSION_ENDINGS:
                raise InvalidInput(f"status must be one of {SESSION_ENDINGS}, got {status!r}")
            return {"findings": service.close_session(session_id, status)}
        raise InvalidInput(f"action must be 'open' or 'close', got {action!r}")


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
    return value


class SecurityAlertHandler(TaskHandler):
    """Record critical findings in the audit log, ahead of all other work."""

    priority = Priority.CRITICAL

    @property
    def task_name(self) -> str:
        return "security_alert"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        findings = payload.get("findings", [])
        log.warning(
            "security alert: %d critical finding(s) in %s", len(findings), payload.get("path")
        )
        from sluice.analysis.service import record_security_alert

        record_security_alert(payload.get("session_id"), payload.get("path"), findings)
        return {"alerted": len(findings)}


# A handler the application registered under the same name first (the guide's in-script
# EmbeddingHandler) wins: these are loaded lazily and must not replace it.
for _handler in (AnalysisHandler(), EmbeddingHandler(), SecurityAlertHandler(), SessionHandler()):
    if _handler.task_name not in registry:
        registry.register(_handler)
