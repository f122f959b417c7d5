"""Performance indexes for the dashboard, issue filtering, search, user lookup and audit queries.

The guide's 004_performance_optimization_indexes (and, as ``downgrade``, its 004_rollback). On
PostgreSQL every index is built with CREATE INDEX CONCURRENTLY, which cannot run in a transaction,
inside Alembic's autocommit block, so writers are never blocked; the name search uses a pg_trgm
GIN index. On SQLite the same indexes are built, except the trigram one. The queries they serve
live in ``sluice/db/dashboard.py``.

Revision ID: 004
Revises: 001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "004"
down_revision = "001"
branch_labels = None
depends_on = None

# (name, table, key, WHERE of a partial index or None, PostgreSQL only). Keys are SQL: columns,
# expressions; names and columns are fixed here, never user input.
INDEXES: list[tuple[str, str, str, str | None, bool]] = [
    # users: case-insensitive login/lookup, newest users
    ("ix_users_lower_email", "users", "lower(email)", None, False),
    ("ix_users_created_at", "users", "created_at", None, False),
    # projects: owner's projects, name search, exact name, recently updated
    ("ix_projects_owner_id_created_at", "projects", "owner_id, created_at", None, False),
    ("ix_projects_name_trgm", "projects", "name gin_trgm_ops", None, True),
    ("ix_projects_lower_name", "projects", "lower(name)", None, False),
    ("ix_projects_updated_at", "projects", "updated_at", None, False),
    # analysis_sessions: the project dashboard and session queues
    ("ix_analysis_sessions_project_id_status_created_at", "analysis_sessions",
     "project_id, status, created_at", None, False),
    ("ix_analysis_sessions_project_id_created_at", "analysis_sessions",
     "project_id, created_at", None, False),
    ("ix_analysis_sessions_status_created_at", "analysis_sessions", "status, created_at", None, False),
    ("ix_analysis_sessions_created_at", "analysis_sessions", "created_at", None, False),
    ("ix_analysis_sessions_finished_at", "analysis_sessions", "finished_at", "finished_at IS NOT NULL",
     False),
    ("ix_analysis_sessions_provider_model", "analysis_sessions", "provider, model", None, False),
    ("ix_analysis_sessions_active", "analysis_sessions", "created_at",
     "status IN ('pending', 'running')", False),
    # analyzed_files: per-session language breakdown, content dedupe, retention
    ("ix_analyzed_files_session_id_language", "analyzed_files", "session_id, language", None, False),
    ("ix_analyzed_files_content_sha256", "analyzed_files", "content_sha256", None, False),
    ("ix_analyzed_files_created_at", "analyzed_files", "created_at", None, False),
    # code_review_results: issue filtering, file view, rule statistics, severity trends
    ("ix_code_review_results_session_id_severity", "code_review_results", "session_id, severity",
     None, False),
    ("ix_code_review_results_session_id_file_path_line", "code_review_results",
     "session_id, file_path, line", None, False),
    ("ix_code_review_results_rule_severity", "code_review_results", "rule, severity", None, False),
    ("ix_code_review_results_severity_created_at", "code_review_results", "severity, created_at",
     None, False),
    ("ix_code_review_results_created_at", "code_review_results", "created_at", None, False),
    ("ix_code_review_results_blocking", "code_review_results", "session_id, created_at",
     "severity IN ('critical', 'high')", False),
    # audit_log: audit queries by kind, by entity, by user, retention
    ("ix_audit_log_entity_type_action_created_at", "audit_log", "entity_type, action, created_at",
     None, False),
    ("ix_audit_log_entity_type_entity_id_created_at", "audit_log",
     "entity_type, entity_id, created_at", None, False),
    ("ix_audit_log_user_id_created_at", "audit_log", "user_id, created_at", None, False),
    ("ix_audit_log_action_created_at", "audit_log", "action, created_at", None, False),
    ("ix_audit_log_created_at", "audit_log", "created_at", None, False),
    # dead_letter_tasks: `sluice dlq list` filters, replay queue, pruning
    ("ix_dead_letter_tasks_task_name_created_at", "dead_letter_tasks", "task_name, created_at",
     None, False),
    ("ix_dead_letter_tasks_queue_created_at", "dead_letter_tasks", "queue, created_at", None, False),
    ("ix_dead_letter_tasks_pending", "dead_letter_tasks", "created_at", "replayed_at IS NULL", False),
    ("ix_dead_letter_tasks_task_id", "dead_letter_tasks", "task_id", None, False),
    ("ix_dead_letter_tasks_created_at", "dead_letter_tasks", "created_at", None, False),
]  # fmt: skip


def _quote(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_identifier(name)


def _applicable() -> list[tuple[str, str, str, str | None, bool]]:
    postgres = op.get_bind().dialect.name == "postgresql"
    return [index for index in INDEXES if postgres or not index[4]]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        for name, table, key, where, _ in _applicable():
            op.execute(_create(name, table, key, where, concurrently=False))
        return
    # Extensions are database-wide: created if missing, never dropped by the downgrade. One
    # already installed may live in a schema that is not on this connection's search_path, so its
    # operator class is named with its schema.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    trgm_schema = op.get_bind().scalar(
        sa.text(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
        )
    )
    with op.get_context().autocommit_block():
        for name, table, key, where, _ in _applicable():
            key = key.replace("gin_trgm_ops", f"{trgm_schema}.gin_trgm_ops")
            # A CONCURRENTLY build that failed leaves an INVALID index IF NOT EXISTS would keep.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(name)}")
            op.execute(_create(name, table, key, where, concurrently=True))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        for name, *_ in _applicable():
            op.execute(f"DROP INDEX IF EXISTS {_quote(name)}")
        return
    with op.get_context().autocommit_block():
        for name, *_ in _applicable():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(name)}")


def _create(name: str, table: str, key: str, where: str | None, concurrently: bool) -> str:
    method = " USING gin" if "gin_trgm_ops" in key else ""
    head = "CREATE INDEX CONCURRENTLY" if concurrently else "CREATE INDEX"
    columns = ", ".join(_key_part(part.strip()) for part in key.split(","))
    suffix = f" WHERE {where}" if where else ""
    return f"{head} IF NOT EXISTS {_quote(name)} ON {_quote(table)}{method} ({columns}){suffix}"


def _key_part(part: str) -> str:
    if "(" in part:  # an expression such as lower(email): its own parentheses, column quoted
        func, column = part.rstrip(")").split("(")
        return f"({func}({_quote(column)}))"
    column, *opclass = part.split()
    return " ".join([_quote(column), *opclass])
