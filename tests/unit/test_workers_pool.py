"""Pool processes freeze what they start with and collect the youngest generation less often."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap

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


def test_a_worker_imports_what_its_handlers_use_before_it_forks_its_pool() -> None:
    # A client loading the handlers for their names imports neither; a worker, at worker_init
    # (before the pool forks), imports both, so its pool processes inherit them.
    script = textwrap.dedent(
        """
        import json, sys
        from celery.signals import worker_init
        import sluice.analysis.tasks
        loaded = lambda: ["sqlalchemy" in sys.modules, "sluice.ai.local" in sys.modules]
        import os
        os.environ.update(SLUICE_AI_PROVIDER="openai")  # no key: each task reports it, not the start
        before = loaded()
        worker_init.send(sender=None)
        print(json.dumps([before, loaded()]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[False, False], [True, True]]
