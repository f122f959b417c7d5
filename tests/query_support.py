"""Helpers shared by the query optimizer tests (unit on SQLite, integration on PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import Engine, text

from sluice.store import Store

WRITER = textwrap.dedent(
    """
    import sys
    from sqlalchemy import text
    from sluice.db import build_engine
    from sluice.query import QueryOptimizer
    from sluice.settings import load_settings
    from sluice.store import get_store
    import os
    engine = build_engine(sys.argv[1])
    QueryOptimizer(engine, store=get_store(load_settings(os.environ)))  # hooks the engine
    with engine.begin() as conn:  # a plain engine write, not sent through the optimizer
        conn.execute(text("UPDATE projects SET name = :n WHERE id = 1"), {"n": sys.argv[2]})
    """
)


def add_project(engine: Engine, name: str = "alpha") -> None:
    """One user and one project (id 1) named ``name``."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (id, email, name, created_at) VALUES (1, 'a@x.io', 'A', :t)"),
            {"t": "2025-01-01"},
        )
        conn.execute(
            text(
                "INSERT INTO projects (id, owner_id, name, root_path, description, created_at,"
                " updated_at) VALUES (1, 1, :n, '', '', :t, :t)"
            ),
            {"n": name, "t": "2025-01-01"},
        )


def write_in_another_process(url: str, new_name: str, env: dict[str, str]) -> None:
    """Rename project 1 from a separate Python process with its own optimizer and store."""
    done = subprocess.run(
        [sys.executable, "-c", WRITER, url, new_name], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def hits(store: Store, optimizer_namespace: str) -> int:
    """Cluster-wide cache hits recorded in the store."""
    return store.hgetall_counters(f"query:{optimizer_namespace}:stats").get("hits", 0)
