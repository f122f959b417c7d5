"""The platform's dashboard queries, in one place for the app, the tests and the benchmarks.

Each is the query one of migration 004's indexes serves (named in ``index``). Parameters are
``:name`` binds, never formatted into the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class DashboardQuery:
    """A named query; ``sqlite_sql`` replaces ``sql`` where SQLite's syntax differs."""

    name: str
    purpose: str
    index: str
    sql: str
    sqlite_sql: str | None = None

    def sql_for(self, dialect: str) -> str:
        """The SQL text for ``dialect`` (``postgresql`` or ``sqlite``)."""
        return self.sqlite_sql if dialect == "sqlite" and self.sqlite_sql else self.sql


QUERIES: dict[str, DashboardQuery] = {
    q.name: q
    for q in (
        DashboardQuery(
            "project_dashboard", "a project's sessions in one status, newest first",
            "ix_analysis_sessions_project_id_status_created_at",
            "SELECT id, status, files_total, created_at, finished_at FROM analysis_sessions"
            " WHERE project_id = :project_id AND status = :status"
            " ORDER BY created_at DESC LIMIT :limit",
        ),
        DashboardQuery(
            "project_timeline", "a project's latest sessions in any status",
            "ix_analysis_sessions_project_id_created_at",
            "SELECT id, status, created_at FROM analysis_sessions WHERE project_id = :project_id"
            " ORDER BY created_at DESC LIMIT :limit",
        ),
        DashboardQuery(
            "issue_filtering", "one session's findings of one severity",
            "ix_code_review_results_session_id_severity",
            "SELECT id, file_path, line, rule, message FROM code_review_results"
            " WHERE session_id = :session_id AND severity = :severity"
            " ORDER BY file_path, line LIMIT :limit",
        ),
        DashboardQuery(
            "session_severity_counts", "finding counts by severity for one session",
            "ix_code_review_results_session_id_severity",
            "SELECT severity, COUNT(*) AS findings FROM code_review_results"
            " WHERE session_id = :session_id GROUP BY severity",
        ),
        DashboardQuery(
            "project_name_search", "projects whose name contains a term (case-insensitive)",
            "ix_projects_name_trgm",
            "SELECT id, name FROM projects WHERE name ILIKE :pattern ORDER BY name LIMIT :limit",
            # SQLite's LIKE is already case-insensitive for ASCII.
            "SELECT id, name FROM projects WHERE name LIKE :pattern ORDER BY name LIMIT :limit",
        ),
        DashboardQuery(
            "user_by_email", "case-insensitive user lookup", "ix_users_lower_email",
            "SELECT id, email, name FROM users WHERE lower(email) = lower(:email)",
        ),
        DashboardQuery(
            "audit_trail", "latest audit entries of one kind and action",
            "ix_audit_log_entity_type_action_created_at",
            "SELECT id, entity_id, user_id, created_at FROM audit_log"
            " WHERE entity_type = :entity_type AND action = :action"
            " ORDER BY created_at DESC LIMIT :limit",
        ),
        DashboardQuery(
            "entity_history", "everything that happened to one entity",
            "ix_audit_log_entity_type_entity_id_created_at",
            "SELECT id, action, user_id, created_at FROM audit_log"
            " WHERE entity_type = :entity_type AND entity_id = :entity_id"
            " ORDER BY created_at DESC LIMIT :limit",
        ),
    )
}  # fmt: skip


def run(conn: Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run dashboard query ``name`` with ``params`` on ``conn``; rows as dicts."""
    query = QUERIES[name]
    result = conn.execute(text(query.sql_for(conn.dialect.name)), params)
    return [dict(row._mapping) for row in result]


def sample_params(conn: Connection) -> dict[str, dict[str, Any]]:
    """Realistic parameters for every query, picked from the seeded data (busiest entities)."""
    one = conn.execute(
        text(
            "SELECT s.project_id, s.id FROM analysis_sessions s"
            " WHERE EXISTS (SELECT 1 FROM code_review_results r WHERE r.session_id = s.id)"
            " ORDER BY s.id LIMIT 1"
        )
    ).first()
    project_id, session_id = (one[0], one[1]) if one else (1, 1)
    email = conn.execute(text("SELECT email FROM users ORDER BY id LIMIT 1")).scalar() or "x@y"
    entity = conn.execute(
        text("SELECT entity_id FROM audit_log WHERE entity_type = 'project' ORDER BY id LIMIT 1")
    ).scalar()
    return {
        "project_dashboard": {"project_id": project_id, "status": "completed", "limit": 20},
        "project_timeline": {"project_id": project_id, "limit": 20},
        "issue_filtering": {"session_id": session_id, "severity": "high", "limit": 100},
        "session_severity_counts": {"session_id": session_id},
        "project_name_search": {"pattern": "%tundra-lumen%", "limit": 20},
        "user_by_email": {"email": email.upper()},
        "audit_trail": {"entity_type": "api_key", "action": "delete", "limit": 50},
        "entity_history": {"entity_type": "project", "entity_id": entity or "1", "limit": 50},
    }
