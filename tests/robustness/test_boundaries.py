"""Fuzzing the other boundaries hostile input crosses: stored cache envelopes (anyone who can write
to the shared store), ``Accept-Encoding`` headers and CDN asset and purge paths (anyone who can send
a request). Contract: a clean result or a :class:`SluiceError`, within the time limit."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sluice.cdn.negotiation import choose_encoding, parse_accept_encoding
from sluice.cdn.nginx import NginxOptions, render_server_config
from sluice.cdn.paths import relative_url_path, resolve_inside
from sluice.cdn.purgepaths import validate_purge_path
from sluice.errors import CodecError, InvalidInput
from sluice.settings import is_nginx_quotable, is_nginx_url_prefix
from sluice.store.codec import Codec
from tests.robustness.contract import EXAMPLES, keeps_contract
from tests.robustness.strategies import any_text, values

HEADERS = [0x01, 0x02, 0x11, 0x12]


def _packed(value: object) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True, default=repr)
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"


envelopes = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda h, body: bytes([h]) + body, st.sampled_from(HEADERS), st.binary(max_size=64)),
    st.builds(
        lambda h, value: bytes([h | 0x10]) + zlib.compress(_packed(value)),
        st.sampled_from([0x01, 0x02]),
        values,
    ),
    st.builds(lambda value: b"\x02" + _packed(value), values),
    st.builds(
        lambda text: b"\x01" + text.encode("utf-8", "surrogatepass"),
        st.one_of(any_text, st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n)),
    ),
)


@given(data=envelopes)
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_codec_decodes_a_planted_envelope_or_raises_codec_error(data: bytes) -> None:
    outcome = keeps_contract(lambda: Codec().decode(data))
    event("refused" if outcome.error else "decoded")
    assert outcome.error is None or isinstance(outcome.error, CodecError)


@given(header=st.one_of(any_text, st.lists(st.sampled_from(
    ["gzip", "br", "identity", "*", "x-gzip", ";q=", "q=0", "q=1.000", "q=0.5", ",", ";", " ",
     "GZIP", "q=2", "q=-1", "q=nan", "\x00", "é", "=", ";;"]
)).map("".join)))  # fmt: skip
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_accept_encoding_negotiation_always_answers_a_known_coding(header: str) -> None:
    outcome = keeps_contract(lambda: choose_encoding(header))
    assert outcome.error is None and outcome.value in {"br", "gzip", "identity"}
    weights = keeps_contract(lambda: parse_accept_encoding(header)).value
    assert all(0.0 <= q <= 1.0 for q in weights.values())


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    (root / "js").mkdir()
    (root / "js" / "app.js").write_text("x")
    (root / "js" / "out").symlink_to(root.parent)  # a link planted to lead outside
    return root.resolve()


paths = st.one_of(
    any_text,
    st.lists(st.sampled_from(["..", ".", "js", "out", "app.js", "", "/", "\\", "%2e%2e", "\x00", "C:"]))
    .map("/".join),
)  # fmt: skip


@given(path=paths)
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_asset_paths_resolve_inside_the_root_or_are_refused(static_root: Path, path: str) -> None:
    outcome = keeps_contract(lambda: resolve_inside(static_root, path))
    event("refused" if outcome.error else "resolved")
    if outcome.error is not None:
        assert isinstance(outcome.error, InvalidInput)
    else:
        assert outcome.value.is_relative_to(static_root)
    url = keeps_contract(lambda: relative_url_path("/static/" + path, "/static/"))
    assert url.error is None or isinstance(url.error, InvalidInput)


@given(path=st.one_of(any_text, paths.map(lambda p: "/" + p)))
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_purge_paths_are_valid_or_refused(path: str) -> None:
    outcome = keeps_contract(lambda: validate_purge_path(path))
    assert (outcome.error is None and outcome.value == path) or isinstance(
        outcome.error, InvalidInput
    )


@given(static_url=st.one_of(any_text, paths.map(lambda p: f"/{p}/")), directory=any_text)
@settings(max_examples=EXAMPLES, deadline=None)
def test_nginx_config_holds_only_literal_values(
    tmp_path_factory: pytest.TempPathFactory, static_url: str, directory: str
) -> None:
    root = Path("/srv") / directory.replace("/", "_")
    outcome = keeps_contract(
        lambda: render_server_config(NginxOptions(root=root, static_url=static_url))
    )
    event("refused" if outcome.error else "rendered")
    if outcome.error is not None:
        assert isinstance(outcome.error, InvalidInput)
        return
    assert is_nginx_url_prefix(static_url) and is_nginx_quotable(str(root.resolve()))
    assert json.dumps(static_url)[1:-1] == static_url  # nothing nginx could read as syntax
