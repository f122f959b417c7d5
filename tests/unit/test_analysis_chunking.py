"""How ``sluice analyze`` cuts a tree into ``analysis`` tasks (:func:`chunk_budget`)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.analysis.runner import (
    CHUNKS_PER_PROCESS,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    chunk_budget,
)
from sluice.settings import Settings, get_settings
from sluice.workers.batching import _checked_chunks
from tests.worker_fixtures import settings_env


def _settings(provider: str) -> Settings:
    env = {"SLUICE_AI_PROVIDER": provider}
    if provider == "openai":
        env["SLUICE_AI_API_KEY"] = "sk-test"
    with settings_env(**env):
        return get_settings()


LOCAL = _settings("local")


@given(total=st.integers(0, 10**9), processes=st.integers(1, 64))
def test_a_local_chunk_is_within_its_bounds(total: int, processes: int) -> None:
    assert MIN_CHUNK_BYTES <= chunk_budget(LOCAL, total, processes) <= MAX_CHUNK_BYTES


@given(total=st.integers(0, 10**9), processes=st.integers(1, 64))
def test_every_process_gets_its_chunks_unless_they_would_be_too_small(
    total: int, processes: int
) -> None:
    budget = chunk_budget(LOCAL, total, processes)
    chunks = math.ceil(total / budget - 1e-9)  # 14.000000000000002 is 14 chunks
    if budget > MIN_CHUNK_BYTES:  # not held up by the floor: enough chunks for every process
        assert chunks >= CHUNKS_PER_PROCESS * processes or budget == MAX_CHUNK_BYTES
    if budget < MAX_CHUNK_BYTES:  # not held down by the cap: no more than needed
        assert chunks <= CHUNKS_PER_PROCESS * processes or budget == MIN_CHUNK_BYTES


@given(
    sizes=st.lists(st.integers(1, 400_000), min_size=1, max_size=300),
    processes=st.integers(1, 16),
)
def test_the_tasks_of_a_tree_hold_every_file_once_in_order(
    sizes: list[int], processes: int
) -> None:
    budget = chunk_budget(LOCAL, sum(sizes), processes)
    chunks = _checked_chunks([{"i": i} for i in range(len(sizes))], 64, sizes, budget)

    assert [index for chunk in chunks for index, _ in chunk] == list(range(len(sizes)))
    for chunk in chunks:  # a chunk closes once it reaches the budget: over it by one file at most
        assert sum(sizes[i] for i, _ in chunk[:-1]) < budget


def test_a_remote_provider_gets_a_task_per_file() -> None:
    assert chunk_budget(_settings("openai"), 10**7, 4) == 0.0


@pytest.mark.parametrize("processes", [0, -3])
def test_no_processes_counts_as_one(processes: int) -> None:
    assert chunk_budget(LOCAL, 10**6, processes) == chunk_budget(LOCAL, 10**6, 1)
