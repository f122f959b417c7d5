"""Helpers shared by the query optimizer tests (unit on SQLite, integration on PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from sluice.store import Store
from tests.conftest import require_service

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


POSTGRES_BINARIES = Path("/usr/lib/postgresql")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_postgres(directory: Path, *settings: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, as the postgres user when root) with
    ``settings`` (``name=value``) on the command line; yields its URL. The shared server is never
    touched. Skips, or fails under SLUICE_REQUIRE_SERVICES=1, when the binaries are missing."""
    versions = sorted(POSTGRES_BINARIES.glob("*/bin/initdb")) if POSTGRES_BINARIES.exists() else []
    if not versions:
        require_service("PostgreSQL server binaries (initdb)", "postgresql://127.0.0.1:1")
    bin_dir = versions[-1].parent
    directory.mkdir(parents=True)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(directory, "postgres")
    data = str(directory / "data")
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", data, "-A", "trust",
                    "-U", "postgres"], check=True, capture_output=True)  # fmt: skip
    port = free_port()
    options = " ".join(
        [f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"]
        + [f"-c {setting}" for setting in settings]
    )
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", data]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(directory / "pg.log"), "-w", "start"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True)
