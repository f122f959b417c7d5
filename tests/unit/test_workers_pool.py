"""Pool processes freeze what they start with and collect the youngest generation less often;
their worker imports what they use before it forks them."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sluice.celery import TASK_MODULES
from sluice.workers.pool import GEN0_THRESHOLD


def test_every_worker_loads_the_pool_tuning() -> None:
    assert "sluice.workers.pool" in TASK_MODULES


def test_a_pool_process_starts_frozen_with_a_higher_threshold() -> None:
    # In a child interpreter: the tuning changes process-wide state this test process keeps.
    script = textwrap.dedent(
        """
        import gc, json
        from celery.signals import worker_process_init
        import sluice.workers.pool
        before = gc.get_threshold()
        worker_process_init.send(sender=None)
        print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold()]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frozen, before, after = json.loads(done.stdout)
    assert frozen > 10_000  # the imported modules' objects
    assert after == [GEN0_THRESHOLD, *before[1:]]
    assert gc.get_freeze_count() == 0 or gc.get_threshold()[0] != GEN0_THRESHOLD  # not here


#: What a pool process would otherwise import after the fork, on the embedded defaults: the
#: handlers' database layer and provider, the store's backend, the database driver, the result
#: backend's module and the C parser billiard's set_pdeathsig builds in each new process.
PREFORK_MODULES = [
    "sqlalchemy",
    "sluice.ai.local",
    "sluice.store.disk",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlite3",
    "celery.backends.database",
    "cffi.cparser",
]


def test_a_worker_imports_what_its_pool_uses_before_it_forks_it(tmp_path: Path) -> None:
    # A client loading the handlers for their names imports none; a worker, at worker_init
    # (before the pool forks), imports them all, so its pool processes inherit them.
    script = textwrap.dedent(
        f"""
        import json, sys
        from celery.signals import worker_init
        import sluice.analysis.tasks, sluice.workers.pool  # of the app's include list
        from sluice.celery import app
        loaded = lambda: [name in sys.modules for name in {PREFORK_MODULES!r}]
        import os
        os.environ.update(SLUICE_AI_PROVIDER="openai")  # no key: each task reports it, not the start
        before = loaded()
        worker_init.send(sender=type("Worker", (), {{"app": app}})())  # as Celery sends it
        print(json.dumps([before, loaded()]))
        """
    )
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    missing = [name for name, loaded in zip(PREFORK_MODULES, after, strict=True) if not loaded]
    assert not any(before) and missing == []
