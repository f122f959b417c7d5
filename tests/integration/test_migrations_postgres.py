from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from sluice.db import Base, build_engine, current_revision, downgrade, upgrade


def test_schema_round_trip_on_postgres(pg_schema: str) -> None:
    engine = build_engine(pg_schema)
    try:
        upgrade(engine=engine)
        assert current_revision(engine) == "004"
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            # Revision 004's performance indexes are not declared on the models.
            assert [d for d in diffs if d[0] != "remove_index"] == []
        downgrade("base", engine=engine)
        assert inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()


def test_upgrade_finds_pg_trgm_installed_in_a_schema_off_the_search_path(postgres_url: str) -> None:
    """An extension is database-wide: a DBA may have put pg_trgm in a schema of its own, which the
    application's search_path does not list. The trigram index must still be built."""
    import uuid

    import sqlalchemy as sa

    name = f"sluice_ext_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(postgres_url).set(database=name)
    engine = build_engine(url.render_as_string(hide_password=False))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA extensions"))
            conn.execute(sa.text("CREATE EXTENSION pg_trgm SCHEMA extensions"))
        upgrade(engine=engine)
        with engine.connect() as conn:
            definition = conn.scalar(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_projects_name_trgm'")
            )
        assert definition is not None and "gin_trgm_ops" in definition, definition
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
