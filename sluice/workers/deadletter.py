"""DeadLetterQueue: tasks that exhausted their retries, kept in ``dead_letter_tasks`` for replay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from sluice.db import DeadLetterTask, session_scope
from sluice.db.engine import get_engine
from sluice.errors import InvalidInput
from sluice.workers import headers as hdr
from sluice.workers.payload import storable, storable_text


def _as_dict(row: DeadLetterTask) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.task_id,
        "task_name": row.task_name,
        "queue": row.queue,
        "priority": row.priority,
        "payload": row.payload,
        "error": row.error,
        "traceback": row.traceback,
        "attempts": row.attempts,
        "replays": row.replays,
        "history": row.history,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "replayed_at": row.replayed_at.isoformat() if row.replayed_at else None,
    }


class DeadLetterQueue:
    """Store, list, replay and prune dead-lettered tasks (``sluice dlq ...``)."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url

    def ensure_schema(self) -> None:
        from sluice.db.migrate import upgrade  # Alembic: only the commands that migrate need it

        upgrade(engine=get_engine(self.database_url))

    def add(
        self,
        task_id: str,
        task_name: str,
        payload: dict[str, Any],
        error: str,
        traceback: str = "",
        queue: str = "normal",
        priority: int = 5,
        attempts: int = 0,
        history: list[Any] | None = None,
        replays: int = 0,
    ) -> int:
        """Record a dead task; returns its dead-letter id.

        Values are stored in a form no database refuses (:func:`~sluice.workers.payload.storable`:
        NaN as text, NUL escaped), so the payload that killed a task cannot also kill its record.
        """
        with session_scope(self.database_url) as db:
            row = DeadLetterTask(
                task_id=storable_text(task_id)[:64],
                task_name=storable_text(task_name)[:200],
                queue=queue,
                priority=priority,
                payload=storable(payload),
                error=storable_text(error),
                traceback=storable_text(traceback),
                attempts=attempts,
                history=storable(history or []),
                replays=replays,
            )
            db.add(row)
            db.flush()
            return row.id

    def list(
        self, limit: int = 50, task_name: str | None = None, pending_only: bool = False
    ) -> list[dict[str, Any]]:
        """Newest first."""
        if limit < 1:
            raise InvalidInput(f"limit must be positive, got {limit}")
        query = select(DeadLetterTask).order_by(DeadLetterTask.id.desc()).limit(limit)
        if task_name:
            query = query.where(DeadLetterTask.task_name == task_name)
        if pending_only:
            query = query.where(DeadLetterTask.replayed_at.is_(None))
        with session_scope(self.database_url) as db:
            return [_as_dict(row) for row in db.scalars(query)]

    def count(self) -> int:
        with session_scope(self.database_url) as db:
            return int(db.scalar(select(func.count()).select_from(DeadLetterTask)) or 0)

    def get(self, entry_id: int) -> dict[str, Any]:
        with session_scope(self.database_url) as db:
            row = db.get(DeadLetterTask, entry_id)
            if row is None:
                raise InvalidInput(f"no dead-letter entry with id {entry_id}")
            return _as_dict(row)

    def replay(self, entry_id: int) -> str:
        """Submit the task again (its replay count raised); returns the new task id.

        The entry names a handler or a Celery task; the call is rebuilt from its payload by that
        task (:meth:`~sluice.workers.SluiceTask.call_of`). A replay that fails again comes back as
        a new entry with a higher ``replays``: replays are explicit, so a poison task can never
        loop on its own.
        """
        with session_scope(self.database_url) as db:
            row = db.get(DeadLetterTask, entry_id)
            if row is None:
                raise InvalidInput(f"no dead-letter entry with id {entry_id}")
            if row.replayed_at is not None:
                raise InvalidInput(
                    f"dead-letter entry {entry_id} was already replayed at {row.replayed_at}"
                )
            task = _task_named(row.task_name)
            args, kwargs = task.call_of(row.payload)
            result = task.apply_async(
                args,
                kwargs,
                priority=row.priority,
                headers={hdr.REPLAYS: row.replays + 1},
            )
            row.replayed_at = datetime.now(UTC)
            return str(result.id)

    def purge(self, entry_ids: Sequence[int] | None = None) -> int:
        """Delete the given entries, or every entry when ``entry_ids`` is None."""
        statement = delete(DeadLetterTask)
        if entry_ids is not None:
            statement = statement.where(DeadLetterTask.id.in_(entry_ids))
        with session_scope(self.database_url) as db:
            return int(db.execute(statement).rowcount)  # type: ignore[attr-defined]

    def prune(self, older_than_days: float) -> int:
        """Delete entries older than ``older_than_days`` (the beat task's job)."""
        if older_than_days <= 0:
            raise InvalidInput(f"older_than_days must be positive, got {older_than_days}")
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        with session_scope(self.database_url) as db:
            result = db.execute(delete(DeadLetterTask).where(DeadLetterTask.created_at < cutoff))
            return int(result.rowcount)  # type: ignore[attr-defined]


def _task_named(name: str) -> Any:
    """The sluice task a dead letter names: a handler's, or a Celery task's own name."""
    from sluice.celery import app
    from sluice.workers.handlers import handler_task_name
    from sluice.workers.loading import ensure_handlers_loaded

    ensure_handlers_loaded()
    task = app.tasks.get(handler_task_name(name)) or app.tasks.get(name)
    if task is None or not hasattr(task, "call_of"):
        raise InvalidInput(
            f"dead letter names {name!r}, which is neither a registered handler nor a sluice task "
            "in this process; add its module to SLUICE_HANDLER_MODULES"
        )
    return task
