"""``sluice analyze``: walk a tree, submit one HIGH-priority task per file, wait, summarise.

Every option is checked before anything starts, then the embedded worker (if any) is started before
Celery and the database layer are even imported, so it boots while this process walks the tree and
migrates the database.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.ai.base import SEVERITIES
from sluice.ai.rules import select_rules
from sluice.analysis.changes import ChangeSet, changes_since
from sluice.analysis.payloads import analysis_payload, embedding_payload
from sluice.errors import BackendUnavailable, ConfigurationError, InvalidInput, SluiceError
from sluice.settings import Settings, get_settings

if TYPE_CHECKING:
    from sluice.analysis.walker import SourceFile, WalkReport
    from sluice.workers.batching import ChunkedBatch
    from sluice.workers.embedded import EmbeddedWorker

log = logging.getLogger(__name__)

#: Called with (files done, files total) as results arrive.
ProgressCallback = Callable[[int, int], None]
#: Bytes of source per ``analysis`` task with the local provider: at most this (about 1 s of its
#: work on a cold cache, 60 ms on a warm one) ...
MAX_CHUNK_BYTES = 1_000_000
#: ... and at least this, however few the files.
MIN_CHUNK_BYTES = 32_000
#: Tasks per worker process a run is cut into (below the cap). Two, not more: every task costs its
#: worker's main process a take, a decode, three events and an acknowledgement, and on the 242-file
#: review (2+2 workers) 4 tasks beat 10 both warm (0.436 s against 0.452 s) and cold (1.61 s against
#: 1.75 s); 20 tasks took 0.504 s warm.
CHUNKS_PER_PROCESS = 2
#: Seconds a session task of a run on external workers may wait before the command pings them.
PING_AFTER = 1.0
#: Seconds a session task waits to be taken before it expires unrun (the command sends another).
SESSION_TTL = 10.0
#: Result polling: the first pause, doubling up to the longest.
_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.05
#: Per file: its path and either the task's summary or the error that failed it.
Outcome = tuple[str, dict[str, Any] | str]


def max_workers() -> int:
    """The most worker processes one run may start: four per CPU this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 4 * max(1, cpus)


@dataclass
class AnalysisReport:
    """The outcome of one analysis session."""

    session_id: int
    root: str
    mode: str
    files_total: int
    files_done: int
    duration_s: float
    walk: WalkReport
    failed: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    files_embedded: int = 0
    cost_saved_usd: float = 0.0
    by_severity: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    changes: ChangeSet | None = None
    changed_lines_only: bool = False

    @property
    def findings_total(self) -> int:
        return sum(self.by_severity.values())

    @property
    def provider_calls(self) -> int:
        return self.files_done - self.cache_hits

    @property
    def files_per_second(self) -> float:
        return self.files_done / self.duration_s if self.duration_s > 0 else 0.0


def run_analysis(
    root: str | Path,
    *,
    rules: Sequence[str] | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
    since: str | None = None,
    changed_lines_only: bool = False,
) -> AnalysisReport:
    """Analyse every source file under ``root`` and return the session's report.

    ``workers``: how many worker processes to start for this run (``None``: an embedded worker when
    the broker is embedded, otherwise the already running ``celery -A sluice worker`` processes; at
    most :func:`max_workers`). With ``ASYNC_PROCESSING_ENABLED=false`` the files are analysed inline
    in this process. ``since``: only files changed since this git revision; ``changed_lines_only``:
    only findings on lines the change added or modified (needs ``since``).
    Raises :class:`InvalidInput` for a bad option before any work starts.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    rule_list = _checked_rules(rules)
    workers = _checked_workers(workers, settings)
    if not Path(root).exists():
        raise InvalidInput(f"path {str(root)!r} does not exist")
    if changed_lines_only and since is None:
        raise InvalidInput("--changed-lines-only needs --since REV (the change to review)")
    changes = changes_since(root, since) if since is not None else None
    if not settings.async_processing_enabled:
        mode = "inline (ASYNC_PROCESSING_ENABLED=false)"
    else:
        mode = f"embedded worker x{workers}" if workers else "external workers"
    worker = _start_worker(workers, settings) if workers else None
    ledger = _Ledger(settings)
    session_id: int | None = None
    try:
        if worker is None and settings.async_processing_enabled and not ledger.remote:
            _require_external_workers(settings)  # remote: the session's opening finds out
        # Here, not at the top: the walk (and pathspec, for .gitignore) waits until the worker runs.
        from sluice.analysis.walker import WalkReport, walk_tree

        walk = WalkReport()
        include = changes.__contains__ if changes is not None else None
        files = list(walk_tree(root, settings.max_file_bytes, walk, include))
        refs: list[str | None] = []
        # The texts go to Redis while a worker opens the session: that round trip costs nothing.
        session_id = ledger.open(
            Path(root).resolve(), len(files), lambda: refs.extend(claim_checks(files, settings))
        )
        notify = progress or (lambda done, total: None)
        notify(0, len(files))
        outcomes, embedded = _run_tasks(
            session_id, files, refs, rule_list, worker, settings, notify
        )
        failed = [(path, error) for path, error in outcomes if isinstance(error, str)]
        # Before the run's own worker stops: on a real broker, it is the one that closes it.
        findings = ledger.close(session_id, "failed" if failed else "completed")
    except BaseException as exc:
        if worker:
            worker.stop()  # at once: what it held stays queued (the broker redelivers it)
        if session_id is not None:
            ledger.end(
                session_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            )
        raise
    if worker and settings.embedded_broker:
        worker.stop_when_idle(settings.broker_dir)
    elif worker:
        worker.shutdown()  # Redis or RabbitMQ: let it acknowledge what it ran
    done = [outcome for _, outcome in outcomes if isinstance(outcome, dict)]
    report = AnalysisReport(
        session_id=session_id,
        root=str(root),
        mode=mode,
        files_total=len(files),
        files_done=len(files) - len(failed),
        duration_s=time.perf_counter() - started,
        walk=walk,
        failed=failed,
        cache_hits=sum(1 for o in done if o.get("cache_hit")),
        cost_saved_usd=sum(float(o.get("cost_saved_usd", 0.0)) for o in done),
        files_embedded=embedded,
        changes=changes,
        changed_lines_only=changed_lines_only,
    )
    if report.changed_lines_only and report.changes is not None:
        changes = report.changes
        findings = [f for f in findings if changes.touches(f["path"], f["line"])]
    report.findings = sort_findings(findings)
    report.by_severity = count_by_severity(report.findings)
    return report


def _checked_rules(rules: Sequence[str] | None) -> list[str] | None:
    if rules is None:
        return None
    rule_list = list(rules)
    select_rules(rule_list)  # raises InvalidInput naming an unknown or empty selector
    return rule_list


def _checked_workers(workers: int | None, settings: Settings) -> int:
    """How many worker processes this run starts (0: none; inline or external workers)."""
    limit = max_workers()
    if workers is not None and not 0 <= workers <= limit:
        raise InvalidInput(
            f"--workers must be between 0 and {limit} (4 per CPU of this machine), got {workers}"
        )
    if not settings.async_processing_enabled:
        return 0
    if workers is None and settings.embedded_broker:
        if settings.worker_concurrency > limit:
            raise ConfigurationError(
                f"SLUICE_WORKER_CONCURRENCY={settings.worker_concurrency} is more than this machine "
                f"runs well; use at most {limit} (4 per CPU)"
            )
        return settings.worker_concurrency
    return workers or 0


def _start_worker(workers: int, settings: Settings) -> EmbeddedWorker:
    from sluice.workers.embedded import EmbeddedWorker

    worker = EmbeddedWorker(workers, settings.data_dir / "logs" / "embedded-worker.log")
    worker.start()
    return worker


def chunk_budget(settings: Settings, total_bytes: int, processes: int) -> float:
    """Bytes of source per ``analysis`` task, for ``total_bytes`` of source on ``processes`` worker
    processes.

    With the local provider many files share a task: it reviews a 30 KB file in a few ms, less than
    a task's publish, bookkeeping and transaction. Chunks are as large as :data:`MAX_CHUNK_BYTES`
    allows, but small enough that each process gets :data:`CHUNKS_PER_PROCESS` of them. With a
    remote provider (0) every file is its own task, so slow calls run in parallel.
    """
    if settings.ai_provider != "local":
        return 0.0
    share = total_bytes / (CHUNKS_PER_PROCESS * max(1, processes))
    return float(min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, share)))


def claim_checks(files: list[SourceFile], settings: Settings) -> list[str | None]:
    """Each file's claim check (:mod:`sluice.analysis.sources`), its text stored in Redis; None
    for each where the texts go in the messages: no Redis store, inline mode, or a store that
    failed (the run goes on without it, as the cache does)."""
    if not (settings.redis_url and settings.async_processing_enabled):
        return [None] * len(files)
    from sluice.analysis.sources import stash_sources
    from sluice.store import get_store

    try:
        return list(stash_sources(get_store(settings), [f.content for f in files]))
    except SluiceError as exc:
        log.warning("sending the files' text in the tasks: the shared store failed (%s)", exc)
        return [None] * len(files)


def _run_tasks(
    session_id: int,
    files: list[SourceFile],
    refs: list[str | None],
    rules: list[str] | None,
    worker: EmbeddedWorker | None,
    settings: Settings,
    notify: ProgressCallback,
) -> tuple[list[Outcome], int]:
    """``analysis`` chunks (HIGH), published at once and polled by this process (progress is per
    analysed file). No chord: its unlock, on a result backend without native chords (the embedded
    one), polls on its own clock and added its interval to every run.

    With a fast provider (see :func:`chunk_budget`) a chunk embeds its files too, in the same task
    and transaction; a separate task cost more than the embedding in it, and sent every file's
    text twice. With a remote provider the embeddings are ``embedding`` chunks (BATCH) of their own,
    so that reviews never wait on the embedding endpoint; they are polled after the analyses.
    ``refs``: the files' claim checks (:func:`claim_checks`), sent instead of texts that are not
    None: a warm re-run on Redis then sends no source at all.
    With async processing off, everything runs inline through the same handlers, retries and
    dead letters. Returns the outcomes and how many files were embedded.
    """
    from sluice.workers import submit_chunks

    if not files:
        return [], 0
    weights = [len(f.content) for f in files]
    processes = worker.concurrency if worker else settings.worker_concurrency
    budget = chunk_budget(settings, sum(weights), processes)
    embed_in_chunk = budget > 0
    analyses = submit_chunks(
        "analysis",
        [
            analysis_payload(session_id, f, rules, embed_in_chunk, ref)
            for f, ref in zip(files, refs, strict=True)
        ],
        weights=weights,
        budget=budget,
    )
    embeddings = None
    if not embed_in_chunk:
        embeddings = submit_chunks("embedding", [embedding_payload(session_id, f) for f in files])
    check_worker = worker.check_alive if worker else None
    values = _collect(analyses, settings, lambda done: notify(done, len(files)), check_worker)
    outcomes: list[Outcome] = []
    for index, source in enumerate(files):
        value = values[index]
        if isinstance(value, BaseException):
            outcomes.append((source.path, f"{type(value).__name__}: {value}"))
        else:
            outcomes.append((source.path, value))
    if embeddings is None:
        return outcomes, sum(1 for _, o in outcomes if isinstance(o, dict) and o.get("embedded"))
    vectors = _collect(embeddings, settings, lambda done: None, check_worker)
    return outcomes, sum(1 for v in vectors.values() if isinstance(v, dict))


def _require_external_workers(settings: Settings) -> None:
    from sluice.celery import app
    from sluice.workers.brokers import unreachable_broker

    try:
        replies = app.control.ping(timeout=2.0, limit=1)  # the first reply is enough
    except Exception as exc:  # kombu raises transport-specific errors
        raise unreachable_broker(settings.broker_url, exc) from None
    if not replies:
        raise BackendUnavailable(
            "no Celery worker answered a ping; start one with `celery -A sluice worker` "
            "or pass --workers N to start workers for this run"
        )


def _collect(
    chunks: ChunkedBatch,
    settings: Settings,
    notify: Callable[[int], None],
    check_worker: Callable[[], None] | None,
) -> dict[int, Any]:
    """Wait for every item's value (``notify`` hears how many are in, as they arrive, in any
    order); fail if none arrives for ``task_timeout`` seconds."""
    values: dict[int, Any] = {}
    last_progress = time.monotonic()
    pause = _FIRST_PAUSE
    try:
        while chunks.pending:
            arrived = chunks.poll()
            if arrived:
                values.update(arrived)
                last_progress = time.monotonic()
                pause = _FIRST_PAUSE
                notify(len(values))
                continue
            if check_worker:
                check_worker()
            if time.monotonic() - last_progress > settings.task_timeout:
                raise BackendUnavailable(
                    f"no task finished for {settings.task_timeout:.0f}s; "
                    f"{chunks.size - len(values)} items are still queued and will be stored "
                    "when workers process them"
                )
            chunks.wait(pause)
            pause = min(pause * 2, _MAX_PAUSE)
    finally:
        chunks.close()
    return values


class _Ledger:
    """Where the run's session is opened and closed: in this process's database (inline, or the
    embedded broker), or through a worker (external workers: the client then needs only the
    broker, and never loads SQLAlchemy)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.remote = settings.async_processing_enabled and not settings.embedded_broker

    def open(self, root: Path, files_total: int, meanwhile: Callable[[], None]) -> int:
        """Open the run's session and return its id; ``meanwhile`` runs once in between (on a
        worker's session, while the worker opens it). If ``meanwhile`` fails, its error is raised
        once the session is open, and the session is ended as failed rather than left open."""
        provider, model = self.settings.ai_provider, self.settings.ai_model
        failures: list[Exception] = []

        def guarded() -> None:
            try:
                meanwhile()
            except Exception as exc:
                failures.append(exc)

        if self.remote:
            payload = {"action": "open", "root": str(root), "files_total": files_total,
                       "provider": provider, "model": model}  # fmt: skip
            session_id = int(self._call(payload, guarded)["session_id"])
        else:
            from sluice.analysis.service import open_session

            session_id = open_session(str(root), files_total, provider, model)
            guarded()
        if failures:
            self.end(session_id, "failed")
            raise failures[0]
        return session_id

    def close(self, session_id: int, status: str) -> list[dict[str, Any]]:
        """Mark the session ``status``; returns its findings."""
        if self.remote:
            found = self._call({"action": "close", "session_id": session_id, "status": status})
            return list(found["findings"])
        from sluice.analysis.service import close_session

        return close_session(session_id, status)

    def end(self, session_id: int, status: str) -> None:
        """Best effort on the way out of a run that did not finish: the session says why."""
        try:
            if self.remote:  # not waited for: the run is going down
                from sluice.workers import submit_task

                submit_task(
                    "analysis_session",
                    {"action": "close", "session_id": session_id, "status": status},
                )
            else:
                self.close(session_id, status)
        except Exception:  # the database may be what failed; the original error is the one to show
            log.warning("could not mark session %s as %s", session_id, status, exc_info=True)

    def _call(
        self, payload: dict[str, Any], meanwhile: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Run one session task on a worker and return its value; ``meanwhile`` runs once, after
        the task is sent and before the wait for it.

        There is no ping first (a round trip of its own): only a task slow to be taken makes the
        command ask whether any worker is up. Each try expires unrun after :data:`SESSION_TTL`
        and is sent again while the command still waits, so a command that gave up (no worker)
        leaves no task behind that would open a session nobody closes.
        """
        from celery.exceptions import TaskRevokedError

        from sluice.workers.brokers import unreachable_broker
        from sluice.workers.submit import handler_task

        started, pinged = time.monotonic(), False

        def check_workers() -> None:
            nonlocal pinged
            if not pinged and time.monotonic() - started >= PING_AFTER:
                pinged = True
                _require_external_workers(self.settings)

        deadline = started + self.settings.task_timeout
        while True:
            try:
                result = handler_task("analysis_session").apply_async(
                    (payload,), expires=SESSION_TTL
                )
            except SluiceError:
                raise
            except Exception as exc:  # kombu raises each transport's own connection errors
                raise unreachable_broker(self.settings.broker_url, exc) from None
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            # Here, after the send: its import is part of what the worker's run hides.
            from sluice.workers.results import forget_quietly, value_of, wait_ready

            wait_ready(
                [result],
                max(deadline - time.monotonic(), 0.0),
                f"the {payload['action']} of the analysis session (a task on the critical "
                "queue: is a worker consuming it?)",
                on_wait=check_workers,
            )
            value = value_of(result)
            forget_quietly(result)
            if isinstance(value, TaskRevokedError):
                continue  # expired before a worker took it (a busy critical queue): again
            if isinstance(value, BaseException):
                raise value
            return dict(value)


def sort_findings(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most severe first, then by location and rule."""
    return sorted(
        findings,
        key=lambda f: (SEVERITIES.index(f["severity"]), f["path"], f["line"], f["rule"]),
    )


def count_by_severity(findings: list[dict[str, Any]]) -> dict[str, int]:
    """``{severity: count}`` in severity order, only severities that occur."""
    counts = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        counts[finding["severity"]] += 1
    return {severity: n for severity, n in counts.items() if n}
