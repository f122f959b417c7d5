"""Realistic, skewed seed data at a chosen scale (``sluice db seed``).

``results`` code_review_results drive the scale: users, projects, sessions and audit entries are
derived from it. Distributions are skewed like production: a few projects own most sessions, most
findings are low severity, a handful of audit actions dominate. Generation is deterministic for a
seed. PostgreSQL is loaded with COPY (psycopg 3), SQLite with batched executemany.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from sluice.errors import InvalidInput

Progress = Callable[[str, int, int], None]

SEVERITIES = (("info", 40), ("low", 30), ("medium", 18), ("high", 9), ("critical", 3))
STATUSES = (("completed", 80), ("failed", 8), ("running", 5), ("pending", 5), ("cancelled", 2))
ENTITY_TYPES = (("project", 40), ("session", 30), ("user", 15), ("settings", 10), ("api_key", 5))
ACTIONS = (("view", 45), ("update", 25), ("create", 15), ("export", 8), ("login", 5), ("delete", 2))
RULES = tuple(f"{family}-{n:03d}" for family in ("sec", "perf", "style", "bug") for n in range(25))
WORDS = ("orbit", "quartz", "nimbus", "atlas", "falcon", "ember", "delta", "lumen", "vertex",
         "cobalt", "harbor", "pixel", "zephyr", "saffron", "tundra", "meridian")  # fmt: skip
LANGUAGE_FILES = ("src/app.py", "src/models.py", "web/index.ts", "lib/util.go", "core/main.rs")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_BATCH = 20_000


@dataclass(frozen=True)
class SeedPlan:
    """Row counts per table for a number of results."""

    users: int
    projects: int
    sessions: int
    results: int
    audit: int

    @classmethod
    def for_results(cls, results: int) -> SeedPlan:
        """The plan for ``results`` code_review_results (at least 1)."""
        if not isinstance(results, int) or results < 1:
            raise InvalidInput(f"results must be a positive integer, got {results!r}")
        return cls(
            users=max(10, results // 50),
            projects=max(5, results // 20),
            sessions=max(10, results // 10),
            results=results,
            audit=max(10, results // 5),
        )


def seed(
    engine: Engine, results: int, seed_value: int = 42, progress: Progress | None = None
) -> SeedPlan:
    """Fill the (migrated) database with ``results`` findings and everything they belong to."""
    plan = SeedPlan.for_results(results)
    rng = random.Random(seed_value)
    with engine.begin() as conn:
        offsets = {
            table: conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar() or 0  # noqa: S608 - fixed names
            for table in ("users", "projects", "analysis_sessions", "code_review_results", "audit_log")
        }  # fmt: skip
    tables: list[tuple[str, Sequence[str], int, Iterator[tuple[Any, ...]]]] = [
        ("users", ("id", "email", "name", "created_at"), plan.users,
         _users(rng, offsets["users"], plan.users)),
        ("projects", ("id", "owner_id", "name", "root_path", "description", "created_at",
                      "updated_at"), plan.projects,
         _projects(rng, offsets["projects"], plan, offsets["users"])),
        ("analysis_sessions", ("id", "project_id", "status", "root_path", "provider", "model",
                               "files_total", "created_at", "finished_at"), plan.sessions,
         _sessions(rng, offsets["analysis_sessions"], plan, offsets["projects"])),
        ("code_review_results", ("id", "session_id", "file_path", "line", "column", "rule",
                                 "severity", "message", "created_at"), plan.results,
         _results(rng, offsets["code_review_results"], plan, offsets["analysis_sessions"])),
        ("audit_log", ("id", "user_id", "entity_type", "entity_id", "action", "details",
                       "created_at"), plan.audit,
         _audit(rng, offsets["audit_log"], plan, offsets["users"], offsets["projects"])),
    ]  # fmt: skip
    load = _copy if engine.dialect.name == "postgresql" else _insert
    for table, columns, count, rows in tables:
        load(engine, table, columns, count, rows, progress)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table, *_ in tables:
                # Explicit ids were loaded: move each serial sequence past them.
                last = f"SELECT MAX(id) FROM {table}"  # noqa: S608 - fixed table names
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence(:t, 'id'), ({last}))"),
                    {"t": table},
                )
            conn.execute(text("ANALYZE"))
    return plan


def _copy(engine: Engine, table: str, columns: Sequence[str], count: int,
          rows: Iterator[tuple[Any, ...]], progress: Progress | None) -> None:  # fmt: skip
    quote = engine.dialect.identifier_preparer.quote
    statement = f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[attr-defined]
            for done, row in enumerate(rows, 1):
                copy.write_row(row)
                if progress and (done % _BATCH == 0 or done == count):
                    progress(table, done, count)
        raw.commit()
    finally:
        raw.close()


def _insert(engine: Engine, table: str, columns: Sequence[str], count: int,
            rows: Iterator[tuple[Any, ...]], progress: Progress | None) -> None:  # fmt: skip
    quote = engine.dialect.identifier_preparer.quote
    statement = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)})"  # noqa: S608
        f" VALUES ({', '.join('?' for _ in columns)})"
    )
    done = 0
    with engine.begin() as conn:
        while batch := list(itertools.islice(rows, _BATCH)):
            conn.exec_driver_sql(statement, [_sqlite_row(row) for row in batch])
            done += len(batch)
            if progress:
                progress(table, done, count)


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.isoformat(" ") if isinstance(v, datetime) else v for v in row)


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...], k: int) -> list[str]:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table], k=k)


def _skewed_ids(rng: random.Random, first: int, count: int, k: int) -> list[int]:
    """``k`` ids in ``first+1 .. first+count``, Zipf-like: low ids are far more frequent."""
    return [first + 1 + min(count - 1, int(count * rng.random() ** 3)) for _ in range(k)]


def _moment(rng: random.Random) -> datetime:
    return EPOCH + timedelta(seconds=rng.randrange(0, 365 * 86400))


def _users(rng: random.Random, first: int, count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(first + 1, first + count + 1):
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
        yield (i, f"User{i}@Example.com", name, _moment(rng))


def _projects(
    rng: random.Random, first: int, plan: SeedPlan, users: int
) -> Iterator[tuple[Any, ...]]:
    owners = _skewed_ids(rng, users, plan.users, plan.projects)
    for n, i in enumerate(range(first + 1, first + plan.projects + 1)):
        name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i}"
        created = _moment(rng)
        yield (i, owners[n], name, f"/srv/{name}", f"The {name} service", created, created)


def _sessions(
    rng: random.Random, first: int, plan: SeedPlan, projects: int
) -> Iterator[tuple[Any, ...]]:
    owners = _skewed_ids(rng, projects, plan.projects, plan.sessions)
    statuses = _weighted(rng, STATUSES, plan.sessions)
    for n, i in enumerate(range(first + 1, first + plan.sessions + 1)):
        created = _moment(rng)
        finished = (
            created + timedelta(seconds=rng.randrange(5, 900))
            if statuses[n] == "completed"
            else None
        )
        yield (i, owners[n], statuses[n], "/srv/repo", "local", "sluice-local-1", rng.randrange(1, 400),
               created, finished)  # fmt: skip


def _results(
    rng: random.Random, first: int, plan: SeedPlan, sessions: int
) -> Iterator[tuple[Any, ...]]:
    severities = SEVERITIES
    for start in range(0, plan.results, _BATCH):
        size = min(_BATCH, plan.results - start)
        owners = _skewed_ids(rng, sessions, plan.sessions, size)
        levels = _weighted(rng, severities, size)
        for n in range(size):
            rule = rng.choice(RULES)
            yield (first + start + n + 1, owners[n], rng.choice(LANGUAGE_FILES), rng.randrange(1, 2000),
                   rng.randrange(0, 80), rule, levels[n], f"{rule}: finding", _moment(rng))  # fmt: skip


def _audit(
    rng: random.Random, first: int, plan: SeedPlan, users: int, projects: int
) -> Iterator[tuple[Any, ...]]:
    types = _weighted(rng, ENTITY_TYPES, plan.audit)
    actions = _weighted(rng, ACTIONS, plan.audit)
    actors = _skewed_ids(rng, users, plan.users, plan.audit)
    entities = _skewed_ids(rng, projects, plan.projects, plan.audit)
    for n, i in enumerate(range(first + 1, first + plan.audit + 1)):
        yield (
            i,
            actors[n],
            types[n],
            str(entities[n]),
            actions[n],
            '{"source": "seed"}',
            _moment(rng),
        )
