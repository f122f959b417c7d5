"""Cached versus uncached answers over generated reads, writes and invalidations, on disk.

The machine is in ``tests/cache_model.py``; ``tests/integration/test_cache_redis.py`` runs it on
Redis.
"""

from __future__ import annotations

import tempfile
import uuid

from sluice.store import DiskStore
from tests.cache_model import MACHINE_SETTINGS, cache_machine

_directory = tempfile.mkdtemp(prefix="sluice-cache-model-")

TestCachedVersusUncachedOnDisk = cache_machine(
    lambda: DiskStore(_directory, prefix=f"model-{uuid.uuid4().hex[:8]}:")
).TestCase
TestCachedVersusUncachedOnDisk.settings = MACHINE_SETTINGS
