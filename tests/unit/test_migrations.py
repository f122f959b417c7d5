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
}


def test_upgrade_creates_the_models_schema_and_downgrade_removes_it(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine=engine)
    assert current_revision(engine) == "001"
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade("base", engine=engine)
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine=engine)  # and back up again: the downgrade left nothing behind
    assert current_revision(engine) == "001"


def test_unknown_revision_is_rejected(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(InvalidInput, match="unknown revision 'zzz'"):
        upgrade("zzz", engine=engine)
