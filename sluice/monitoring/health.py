"""``/health``: one check per component, run concurrently, each bounded by a short deadline.

A check that hangs (a broker behind a dropped firewall rule, a database refusing to accept) is
reported as failed when its deadline passes; its thread is abandoned, not waited for, so the
endpoint answers within about ``timeout`` seconds whatever is down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from sluice.monitoring import sources
from sluice.monitoring.consumers import check_consumers
from sluice.monitoring.logs import configured_secrets, redact
from sluice.settings import get_settings
from sluice.store import get_store

#: Seconds each check may take before it counts as failed.
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    ok: bool
    detail: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The check's JSON form."""
        return {
            "status": "ok" if self.ok else "fail",
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
        }


def check_broker() -> str:
    """The broker accepts a connection."""
    from sluice.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.1)
        return f"connected to {redact(connection.as_uri())}"


def check_store() -> str:
    """The shared store answers a ping."""
    store = get_store()
    if not store.ping():
        raise ConnectionError(f"{store!r} does not answer")
    return repr(store)


def check_database() -> str:
    """The database runs ``SELECT 1``."""
    from sluice.db.engine import get_engine

    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
    return redact(get_settings().database_url)


def check_workers() -> str:
    """At least one Celery worker answers a ping."""
    names = sources.workers_online(timeout=min(1.0, CHECK_TIMEOUT / 2))
    if not names:
        raise ConnectionError("no worker answered a ping")
    return ", ".join(names)


CHECKS: dict[str, Callable[[], str]] = {
    "broker": check_broker,
    "consumers": check_consumers,
    "store": check_store,
    "database": check_database,
    "workers": check_workers,
}


def run_checks(
    checks: Mapping[str, Callable[[], str]] | None = None, timeout: float = CHECK_TIMEOUT
) -> dict[str, CheckResult]:
    """Run every check in its own daemon thread; those still running after ``timeout`` fail."""
    checks = CHECKS if checks is None else checks
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()
    started = time.monotonic()

    def run(name: str, check: Callable[[], str]) -> None:
        begin = time.monotonic()
        try:
            result = CheckResult(True, check(), time.monotonic() - begin)
        except Exception as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", configured_secrets())
            result = CheckResult(False, detail, time.monotonic() - begin)
        with lock:
            results.setdefault(name, result)

    threads = [
        threading.Thread(target=run, args=item, name=f"health-{item[0]}", daemon=True)
        for item in checks.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, started + timeout - time.monotonic()))
    with lock:
        for name in checks:
            results.setdefault(name, CheckResult(False, f"no answer within {timeout:g} s", timeout))
        return {name: results[name] for name in checks}


def health_report(timeout: float = CHECK_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """Whether every component is healthy, and the JSON body naming any that failed."""
    results = run_checks(timeout=timeout)
    failed = [name for name, result in results.items() if not result.ok]
    body = {
        "status": "fail" if failed else "ok",
        "failed": failed,
        "checks": {name: result.as_dict() for name, result in results.items()},
    }
    return not failed, body
