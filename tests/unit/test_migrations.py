from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from sluice.db import Base, build_engine, current_revision, downgrade, upgrade
from sluice.errors import InvalidInput

TABLES = {
    "users",
    "projects",
    "analysis_sessions",
    "analyzed_files",
    "code_review_results",
    "audit_log",
    "dead_letter_tasks",
    "file_embeddings",
}


def test_upgrade_creates_the_models_schema_and_downgrade_removes_it(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine=engine)
    assert current_revision(engine) == "004"
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        # Revision 004's performance indexes are not declared on the models.
        assert [d for d in diffs if d[0] != "remove_index"] == []
    downgrade("base", engine=engine)
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine=engine)  # and back up again: the downgrade left nothing behind
    assert current_revision(engine) == "004"


def test_unknown_revision_is_rejected(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(InvalidInput, match="unknown revision 'zzz'"):
        upgrade("zzz", engine=engine)


def test_head_revision_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from sluice.db import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config(build_engine("sqlite://")))
    assert script.get_heads() == [migrate.HEAD_REVISION]


def test_upgrade_of_a_database_at_head_runs_no_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.db import migrate

    engine = build_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine=engine)
    ran: list[str] = []
    monkeypatch.setattr(migrate, "_run", lambda engine, action, revision: ran.append(action))
    upgrade(engine=engine)
    upgrade(migrate.HEAD_REVISION, engine=engine)
    assert ran == []
    upgrade("001", engine=engine)  # any other target still goes through Alembic
    assert ran == ["upgrade"]


def test_prune_deletes_only_old_sessions_and_their_rows(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select

    from sluice.analysis.service import prune_sessions
    from sluice.db import AnalysisSession, CodeReviewResult, session_scope

    upgrade()
    old = datetime.now(UTC) - timedelta(days=40)
    with session_scope() as db:
        for created in (old, datetime.now(UTC)):
            session = AnalysisSession(
                root_path="/x", provider="local", model="m", created_at=created
            )
            db.add(session)
            db.flush()
            db.add(
                CodeReviewResult(
                    session_id=session.id,
                    file_path="a.py",
                    line=1,
                    rule="r",
                    severity="low",
                    message="m",
                )
            )
    assert prune_sessions(30) == 1
    with session_scope() as db:
        assert db.scalar(select(func.count()).select_from(AnalysisSession)) >= 1
        assert (
            db.scalar(
                select(func.count()).where(AnalysisSession.created_at < old + timedelta(days=1))
            )
            == 0
        )
        orphan = (
            select(func.count())
            .select_from(CodeReviewResult)
            .where(CodeReviewResult.session_id.not_in(select(AnalysisSession.id)))
        )
        assert db.scalar(orphan) == 0
    with pytest.raises(InvalidInput):
        prune_sessions(0)
