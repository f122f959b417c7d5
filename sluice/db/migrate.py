"""Run the Alembic migrations shipped inside the package (``sluice db upgrade|downgrade``).

Alembic is imported only when there is something to migrate: every ``sluice analyze`` upgrades to
head first, and a database already there is told by one query (a tenth of a second less per run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from sluice.db.engine import get_engine
from sluice.errors import BackendUnavailable, InvalidInput

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision in ``sluice/migrations/versions`` (a unit test holds it to Alembic's head).
HEAD_REVISION = "004"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "sluice:migrations")
    return config


def _run(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(engine)
    known = {s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}
    if revision not in known | {"head", "base"} and not revision.startswith(("+", "-")):
        raise InvalidInput(f"unknown revision {revision!r}; known: {', '.join(sorted(known))}")
    try:
        # Not engine.begin(): Alembic must own the transaction, so that a revision's
        # autocommit_block() (CREATE INDEX CONCURRENTLY in 004) can commit and leave it.
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
            connection.commit()
    except OperationalError as exc:
        raise BackendUnavailable(f"database {engine.url!r} is unavailable: {exc.orig}") from None


def upgrade(revision: str = "head", engine: Engine | None = None) -> None:
    """Migrate the database up to ``revision``."""
    engine = engine or get_engine()
    if revision in ("head", HEAD_REVISION) and _revision_of(engine) == HEAD_REVISION:
        return
    _run(engine, "upgrade", revision)


def downgrade(revision: str, engine: Engine | None = None) -> None:
    """Migrate the database down to ``revision`` (``base`` drops everything sluice created)."""
    _run(engine or get_engine(), "downgrade", revision)


def current_revision(engine: Engine | None = None) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _revision_of(engine: Engine) -> str | None:
    try:
        return current_revision(engine)
    except OperationalError as exc:
        raise BackendUnavailable(f"database {engine.url!r} is unavailable: {exc.orig}") from None
