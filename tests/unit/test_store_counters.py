"""BufferedCounters: every delta reaches the shared totals, whatever its sign."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.store.counters import BufferedCounters


def buffer_into(totals: dict[str, int]) -> BufferedCounters:
    def flush(batch: dict[str, int]) -> None:
        for field, amount in batch.items():
            totals[field] = totals.get(field, 0) + amount

    return BufferedCounters(flush, lambda: dict(totals), interval=3600)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), max_size=30))
def test_shared_total_is_the_sum_of_every_delta_flushed_at_any_point(
    steps: list[tuple[int, bool]],
) -> None:
    totals: dict[str, int] = {}
    buffer = buffer_into(totals)
    for delta, flush_now in steps:
        buffer.add(("all:running", delta))
        if flush_now:
            buffer.flush()
    buffer.flush()
    assert totals.get("all:running", 0) == sum(delta for delta, _ in steps)


def test_a_decrement_flushed_after_its_increment_is_not_lost() -> None:
    totals: dict[str, int] = {}
    buffer = buffer_into(totals)
    buffer.incr("all", "running", 1)
    buffer.flush()
    buffer.incr("all", "running", -1)
    buffer.flush()
    assert totals == {"all:running": 0}
