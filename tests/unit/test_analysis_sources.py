"""Claim checks for source text: a ref stands for its own text, or its file fails; never another text.

On the embedded store here; ``tests/integration/test_analysis_chunks.py`` runs them on Redis with
real workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.analysis import WalkReport, analyze_sources, list_sessions, run_analysis, walk_tree
from sluice.analysis import runner as runner_module
from sluice.analysis import service as service_module
from sluice.analysis.payloads import analysis_payload
from sluice.analysis.service import open_session
from sluice.analysis.sources import SOURCE_TTL, resolve_sources, source_ref, stash_sources
from sluice.errors import BackendUnavailable, CodecError, InvalidInput
from sluice.settings import get_settings
from sluice.store import Codec, DiskStore, get_store
from sluice.workers import DeadLetterQueue
from tests.conftest import EXAMPLES
from tests.worker_fixtures import settings_env

# Any text a walker can produce, lone surrogates (from undecodable bytes) included.
TEXTS = st.text(st.characters(codec=None), max_size=200)


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "store", prefix="src-test:", codec=Codec())


def _item(ref: Any, path: str = "a.py") -> dict[str, Any]:
    return {"session_id": 1, "path": path, "content_ref": ref, "language": "python"}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(TEXTS, max_size=8, unique=True), forged=st.data())
def test_a_ref_resolves_to_its_own_text_or_its_item_fails(
    store: DiskStore, texts: list[str], forged: st.DataObject
) -> None:
    """Stored, expired and overwritten-by-another-text sources: each item gets exactly its text, or
    an error; a foreign value under a ref is never handed out as that file's source."""
    store.clear_namespace()  # each example starts from an empty store
    refs = stash_sources(store, texts)
    assert refs == [source_ref(t) for t in texts]
    faults = {}
    for ref in refs:
        fault = faults[ref] = forged.draw(
            st.sampled_from(["none", "expired", "foreign", "garbage"])
        )
        if fault == "expired":
            store.delete("src:" + ref)
        elif fault == "foreign":
            other = forged.draw(TEXTS.filter(lambda t, ref=ref: source_ref(t) != ref))
            store.set_encoded(
                "src:" + ref, store.codec.encode(other.encode("utf-8", "surrogatepass"))
            )
        elif fault == "garbage":
            store.set_encoded("src:" + ref, b"\x80\x04not a value")
    resolved = resolve_sources(store, [_item(ref, f"f{i}.py") for i, ref in enumerate(refs)])
    for text, ref, got in zip(texts, refs, resolved, strict=True):
        if isinstance(got, dict):
            assert got["content"] == text and "content_ref" not in got
        else:
            assert isinstance(got, BackendUnavailable | CodecError)
            assert faults[ref] != "none"
    stash_sources(store, texts)  # the next run stores them again
    assert all(isinstance(r, dict) for r in resolve_sources(store, [_item(r) for r in refs]))


def test_a_rerun_uploads_nothing_and_renews_every_text(store: DiskStore) -> None:
    texts = ["a = 1\n", "b = 2\n", "a = 1\n"]  # the same text twice is stored once
    refs = stash_sources(store, texts)
    assert refs[0] == refs[2] != refs[1]
    store.touch_many(["src:" + ref for ref in refs], 5.0)  # as if stored nearly a day ago
    with mock.patch.object(store, "set_many_encoded", wraps=store.set_many_encoded) as upload:
        assert stash_sources(store, texts) == refs
    upload.assert_called_once_with({}, SOURCE_TTL)
    assert all(SOURCE_TTL - 60 < (store.ttl("src:" + ref) or 0) <= SOURCE_TTL for ref in refs)


def test_only_missing_texts_are_uploaded(store: DiskStore) -> None:
    refs = stash_sources(store, ["kept\n", "lost\n"])
    store.delete("src:" + refs[1])
    with mock.patch.object(store, "set_many_encoded", wraps=store.set_many_encoded) as upload:
        stash_sources(store, ["kept\n", "lost\n"])
    (uploaded, _ttl), _ = upload.call_args
    assert list(uploaded) == ["src:" + refs[1]]


@pytest.mark.parametrize("ref", ["", "abc", "G" * 32, "A" * 32, 12, None, ["x"], "a" * 33])
def test_a_malformed_ref_fails_its_item_alone(store: DiskStore, ref: Any) -> None:
    (good,) = stash_sources(store, ["ok = 1\n"])
    bad, fine = resolve_sources(store, [_item(ref), _item(good)])
    assert isinstance(bad, InvalidInput) and "content_ref must be 32 hex digits" in str(bad)
    assert isinstance(fine, dict) and fine["content"] == "ok = 1\n"


def test_an_item_with_both_content_and_ref_is_refused(store: DiskStore) -> None:
    (ref,) = stash_sources(store, ["x = 1\n"])
    (got,) = resolve_sources(store, [{**_item(ref), "content": "y = 2\n"}])
    assert isinstance(got, InvalidInput) and "both content and content_ref" in str(got)


def test_a_missing_text_names_the_file_and_what_to_do(store: DiskStore) -> None:
    (got,) = resolve_sources(store, [_item(source_ref("never stored"), "pkg/mod.py")])
    assert isinstance(got, BackendUnavailable)
    assert "'pkg/mod.py'" in str(got) and "run `sluice analyze` again" in str(got)


def test_items_without_refs_are_left_as_they_are(store: DiskStore) -> None:
    item = {"session_id": 1, "path": "a.py", "content": "x", "language": "python"}
    with mock.patch.object(store, "get_many_encoded") as read:
        assert resolve_sources(store, [item]) == [item]
    read.assert_not_called()


def test_a_chunk_of_refs_is_reviewed_as_the_same_chunk_of_texts(
    sync_mode: DeadLetterQueue,
) -> None:
    """The handler's view: refs and inline texts give the same summaries; a forged source fails
    its file alone, and the others are stored."""
    texts = {"a.py": "import os\nos.system(cmd)\n", "b.py": "x = eval(s)\n", "c.py": "pass\n"}
    session_id = open_session("/t", len(texts), "local", "m")
    inline = [
        {"session_id": session_id, "path": p, "content": t, "language": "python"}
        for p, t in texts.items()
    ]
    store = get_store()
    refs = stash_sources(store, list(texts.values()))
    by_ref = [
        {"session_id": session_id, "path": p, "content_ref": r, "language": "python"}
        for p, r in zip(texts, refs, strict=True)
    ]
    expected = analyze_sources(inline)  # reviews them; the chunk of refs then hits the cache
    assert analyze_sources(by_ref) == [{**o, "cache_hit": True} for o in expected]  # type: ignore[dict-item]
    store.set_encoded("src:" + refs[1], store.codec.encode(b"x = 1\n"))  # a tampered value
    outcomes = analyze_sources(by_ref)
    assert isinstance(outcomes[1], CodecError) and "'b.py'" in str(outcomes[1])
    assert [outcomes[0], outcomes[2]] == [{**expected[i], "cache_hit": True} for i in (0, 2)]  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "env",
    [
        {},  # no Redis: the embedded store's worker is on this machine
        {"SLUICE_REDIS_URL": "redis://127.0.0.1:1/0", "ASYNC_PROCESSING_ENABLED": "false"},
        {"SLUICE_REDIS_URL": "redis://127.0.0.1:1/0"},  # a store that fails: the run goes on
    ],
)
def test_the_texts_go_in_the_tasks_without_a_working_redis_store(
    data_dir: Path, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    files = list(walk_tree(EXAMPLES, 10**6, WalkReport()))
    with settings_env(**env):
        refs = runner_module.claim_checks(files, get_settings())
    assert refs == [None] * len(files)
    failed = "the shared store failed" in caplog.text
    assert failed == ("SLUICE_REDIS_URL" in env and "ASYNC_PROCESSING_ENABLED" not in env)
    payload = analysis_payload(1, files[0], None, True, refs[0])
    assert payload["content"] == files[0].content and "content_ref" not in payload


def test_a_stash_that_fails_ends_the_session_it_overlapped(
    sync_mode: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The texts are stored while the session opens: when that fails in a way the run cannot go
    on from, the session is ended as failed, not left open."""

    def broken(*args: Any) -> list[str | None]:
        raise RuntimeError("stash broke (test)")

    monkeypatch.setattr(runner_module, "claim_checks", broken)
    with pytest.raises(RuntimeError, match="stash broke"):
        run_analysis(EXAMPLES)
    (session,) = list_sessions()
    assert session.status == "failed"


@pytest.mark.parametrize("outage", ["brief", "longer than the patience"])
def test_a_chunk_waits_out_a_brief_store_outage_then_fails_whole(
    sync_mode: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch, outage: str
) -> None:
    """A task cannot run without its texts: it asks the store again for SOURCE_PATIENCE (a Redis
    restart, during which the task layer could not republish it either), then the chunk raises
    (and is retried) instead of reporting every file as failed."""
    monkeypatch.setattr(service_module, "SOURCE_PATIENCE", 0.5)
    store = get_store()
    refs = stash_sources(store, [f"a = {outage!r}\n", f"b = {outage!r}\n"])
    items = [
        {**_item(ref, f"f{i}.py"), "session_id": open_session("/t", 2, "local", "m")}
        for i, ref in enumerate(refs)
    ]
    real, failures = store.get_many_encoded, [0]

    def restarting(keys: Any) -> dict[str, bytes]:
        if not all(key.startswith("src:") for key in keys):
            return real(keys)  # the AI cache shares this store: its reads are not the subject
        failures[0] += 1
        if outage != "brief" or failures[0] <= 2:
            raise BackendUnavailable("store restarting (test)")
        return real(keys)

    with mock.patch.object(store, "get_many_encoded", side_effect=restarting):
        if outage == "brief":
            resolved = service_module._with_sources(items)
            assert [r["content"] for r in resolved] == [f"a = {outage!r}\n", f"b = {outage!r}\n"]  # type: ignore[index]
            assert failures[0] == 3
        else:
            with pytest.raises(BackendUnavailable, match="restarting"):
                analyze_sources(items)  # the chunk raises: the task layer retries it
            assert failures[0] > 2  # asked again before giving up
