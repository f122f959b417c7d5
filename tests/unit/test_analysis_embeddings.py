"""With a fast provider a chunk of the main job embeds its files in the same task and transaction.

Whichever way a file is embedded (in its analysis chunk, or by an ``embedding`` task as with a
remote provider), the stored vectors are the same; a file that fails in its chunk stores none, and
a chunk stored twice keeps one vector per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sluice.ai import get_provider
from sluice.analysis import WalkReport, analyze_sources, run_analysis, walk_tree
from sluice.analysis import runner as runner_module
from sluice.analysis.payloads import EMBED_CHARS
from sluice.analysis.service import open_session
from sluice.db import FileEmbedding, session_scope
from sluice.errors import InvalidInput
from sluice.settings import get_settings
from sluice.workers import DeadLetterQueue

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: What ``sluice analyze examples`` reviews.
SOURCES = list(walk_tree(EXAMPLES, 1_000_000, WalkReport()))


def _vectors(session_id: int) -> dict[str, list[float]]:
    with session_scope() as db:
        rows = db.scalars(select(FileEmbedding).where(FileEmbedding.session_id == session_id))
        stored: dict[str, list[float]] = {}
        for row in rows:
            assert row.path not in stored, f"{row.path} has two embeddings"
            stored[row.path] = list(row.vector)
        return stored


def _items(session_id: int, embed: Any = True) -> list[dict[str, Any]]:
    return [
        {
            "session_id": session_id,
            "path": source.path,
            "content": source.content,
            "language": source.language,
            "rules": None,
            "embed": embed,
        }
        for source in SOURCES
    ]


def _submitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The handler names ``sluice analyze`` submits chunks for, in order."""
    import sluice.workers

    names: list[str] = []
    submit = sluice.workers.submit_chunks

    def recording(name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return submit(name, *args, **kwargs)

    monkeypatch.setattr(sluice.workers, "submit_chunks", recording)
    return names


def test_a_run_embeds_every_file_in_its_analysis_chunks(
    sync_mode: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = _submitted(monkeypatch)
    report = run_analysis(EXAMPLES)

    assert submitted == ["analysis"]  # no embedding tasks of their own
    assert report.files_embedded == report.files_total == len(SOURCES) > 0
    texts = {source.path: source.content[:EMBED_CHARS] for source in SOURCES}
    expected = get_provider(get_settings()).embed(list(texts.values())).vectors
    assert _vectors(report.session_id) == dict(zip(texts, expected, strict=True))


def test_chunks_and_embedding_tasks_store_the_same_vectors(
    sync_mode: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_chunks = run_analysis(EXAMPLES)
    submitted = _submitted(monkeypatch)
    monkeypatch.setattr(runner_module, "chunk_budget", lambda *args: 0.0)  # a remote provider's
    by_tasks = run_analysis(EXAMPLES)

    assert submitted == ["analysis", "embedding"]
    assert by_tasks.files_embedded == in_chunks.files_embedded == len(SOURCES)
    assert _vectors(by_tasks.session_id) == _vectors(in_chunks.session_id)
    assert by_tasks.findings == in_chunks.findings


def test_a_file_failing_in_its_chunk_stores_no_embedding(sync_mode: DeadLetterQueue) -> None:
    session_id = open_session("/t", len(SOURCES), "local", "m")
    items = _items(session_id)
    items[1] = {**items[1], "session_id": 0}  # fails validation in its slot
    outcomes = analyze_sources(items)

    assert isinstance(outcomes[1], InvalidInput)
    assert all(o["embedded"] is True for i, o in enumerate(outcomes) if i != 1)  # type: ignore[index]
    assert set(_vectors(session_id)) == {item["path"] for i, item in enumerate(items) if i != 1}


def test_a_chunk_stored_twice_keeps_one_embedding_per_file(sync_mode: DeadLetterQueue) -> None:
    session_id = open_session("/t", len(SOURCES), "local", "m")
    analyze_sources(_items(session_id))
    first = _vectors(session_id)
    analyze_sources(_items(session_id))  # what a redelivery after a lost ack does

    assert _vectors(session_id) == first and len(first) == len(SOURCES)


def test_a_file_not_asked_to_be_embedded_is_not(sync_mode: DeadLetterQueue) -> None:
    session_id = open_session("/t", len(SOURCES), "local", "m")
    outcomes = analyze_sources(_items(session_id, embed=False))

    assert all(isinstance(o, dict) and "embedded" not in o for o in outcomes)
    assert _vectors(session_id) == {}


@pytest.mark.parametrize("embed", ["yes", 1, None, [True]])
def test_embed_must_be_true_or_false(sync_mode: DeadLetterQueue, embed: Any) -> None:
    session_id = open_session("/t", 1, "local", "m")
    (outcome,) = analyze_sources(_items(session_id, embed=embed)[:1])

    assert isinstance(outcome, InvalidInput) and "embed must be true or false" in str(outcome)
    assert _vectors(session_id) == {}
