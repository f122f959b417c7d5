"""AI cache keys: two calls share an entry if and only if every output-shaping input is equal.

Property tests over generated inputs (hypothesis, fixed budgets), plus the provider identities that
put rule sets and prompts into the keys, and the one clear error for arguments that are not JSON.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ai import LocalProvider, OpenAIProvider
from sluice.ai.base import source_digest
from sluice.ai.local import analyzer_version
from sluice.cache import AIResultCache, CacheConfig, CacheKeyGenerator, cached_ai_call
from sluice.cache.keys import TRANSPORT_PARAMS
from sluice.errors import InvalidInput
from sluice.store import DiskStore

EXAMPLES = 150

texts = st.text(max_size=12)
models = st.none() | st.sampled_from(["gpt-4o", "gpt-4o-mini", "sluice-local-1"])
identities = st.none() | st.fixed_dictionaries(
    {
        "provider": st.sampled_from(["local", "openai"]),
        "model": st.sampled_from(["a", "b"]),
        "rules": st.sampled_from(["digest-1", "digest-2"]),
    }
)
rule_sets = st.none() | st.lists(st.sampled_from(["security", "quality", "style.todo"]), max_size=3)
languages = st.sampled_from(["python", "Python", "PYTHON", "javascript", "go"])


def _analysis_inputs() -> Any:
    return st.tuples(texts, languages, rule_sets, models, identities)


def _normal_analysis(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the output depends on: rules as a set (none or empty: all), language in any case."""
    code, language, rules, model, identity = inputs
    return (code, language.lower(), frozenset(rules) if rules else None, model, identity)


@settings(max_examples=EXAMPLES, deadline=None)
@given(_analysis_inputs(), _analysis_inputs())
def test_analysis_keys_are_shared_iff_the_inputs_are_equal(a: Any, b: Any) -> None:
    key_a, key_b = CacheKeyGenerator.analysis(*a), CacheKeyGenerator.analysis(*b)
    same = _normal_analysis(a) == _normal_analysis(b)
    assert (key_a == key_b) is same
    assert (key_a.key == key_b.key) is same  # the digest, not only the fingerprint


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.text(max_size=4)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user"]), "content": texts}),
    min_size=1,
    max_size=3,
)
params = st.dictionaries(
    st.sampled_from(["temperature", "max_tokens", "top_p", "seed", "stop", *TRANSPORT_PARAMS]),
    st.none() | st.integers(0, 2) | st.floats(0, 1, width=16) | st.text(max_size=3),
    max_size=4,
)


def _normal_response(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Transport options out, numbers as floats, no temperature = the provider's default."""
    msgs, model, identity, kwargs = inputs
    shaping = {}
    for name, value in kwargs.items():
        if name in TRANSPORT_PARAMS:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        if name == "stop" and isinstance(value, str):
            value = [value]
        shaping[name] = value
    if shaping.get("temperature") is None:
        shaping["temperature"] = "default"
    return (msgs, model, identity, sorted(shaping.items(), key=repr))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.tuples(messages, models, identities, params), st.tuples(messages, models, identities, params)
)
def test_response_keys_are_shared_iff_the_output_shaping_inputs_are_equal(a: Any, b: Any) -> None:
    key_a = CacheKeyGenerator.response(a[0], a[1], a[2], **a[3])
    key_b = CacheKeyGenerator.response(b[0], b[1], b[2], **b[3])
    assert (key_a == key_b) is (_normal_response(a) == _normal_response(b))


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: 1 and 1.0 and True differ; tuples are lists."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.tuples(st.sampled_from(["m.f", "m.g"]), json_values, json_values, models),
    st.tuples(st.sampled_from(["m.f", "m.g"]), json_values, json_values, models),
)
def test_call_keys_are_shared_iff_function_model_and_arguments_are_equal(a: Any, b: Any) -> None:
    key_a = CacheKeyGenerator.call("analysis", a[0], {"x": a[1], "y": a[2]}, a[3])
    key_b = CacheKeyGenerator.call("analysis", b[0], {"x": b[1], "y": b[2]}, b[3])
    same = a[0] == b[0] and a[3] == b[3] and _json_equal(a[1], b[1]) and _json_equal(a[2], b[2])
    assert (key_a == key_b) is same


# -- the decorator ------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    cache = AIResultCache(store=DiskStore(tmp_path / "s"), config=CacheConfig(), enabled=True)
    yield cache
    cache.close()


def test_the_decorators_model_is_part_of_the_key(cache: AIResultCache) -> None:
    calls: list[str] = []

    def review(code: str) -> str:
        calls.append(code)
        return f"reviewed {code}"

    # The same function under two models (two deployments, or one decorated twice).
    with_4o = cached_ai_call(cache, "analysis", model="gpt-4o")(review)
    with_mini = cached_ai_call(cache, "analysis", model="gpt-4o-mini")(review)
    assert with_4o("x") == with_mini("x") == "reviewed x"
    assert calls == ["x", "x"]
    assert with_4o("x") == "reviewed x" and len(calls) == 2


@pytest.mark.parametrize(
    ("argument", "type_name"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (b"bytes", "bytes"),
        (float("nan"), "nan"),
        ({1: "int key"}, "int"),
        ({"nested": [{None: 1}]}, "NoneType"),
        ([{"deep": {3.5: 1}}], "float"),
        (lambda: 1, "function"),
    ],
    ids=repr,
)
def test_a_non_json_argument_raises_one_error_naming_it(
    cache: AIResultCache, argument: Any, type_name: str
) -> None:
    @cached_ai_call(cache, "analysis")
    def review(code: str, options: Any = None) -> str:
        raise AssertionError("never called with an argument that cannot be keyed")

    with pytest.raises(InvalidInput, match="argument 'options'") as error:
        review("x", options=argument)
    assert type_name in str(error.value)


def test_an_int_dict_key_never_shares_the_string_keys_entry() -> None:
    with pytest.raises(InvalidInput):
        CacheKeyGenerator.call("analysis", "m.f", {"a": {1: "x"}})
    CacheKeyGenerator.call("analysis", "m.f", {"a": {"1": "x"}})  # a string key is fine


# -- provider identities ------------------------------------------------------------------------


def test_local_identity_carries_the_analyzer_digest_and_its_limits() -> None:
    a = LocalProvider().cache_identity("analysis")
    assert a["rules"] == analyzer_version() and a["provider"] == "local"
    assert LocalProvider(max_line_length=80).cache_identity("analysis") != a
    assert LocalProvider(dimensions=64).cache_identity("embedding") != LocalProvider(
        dimensions=128
    ).cache_identity("embedding")
    # Nothing that changes no answer splits the cache.
    assert LocalProvider(dimensions=64).cache_identity("analysis") == a
    with pytest.raises(InvalidInput):
        LocalProvider().cache_identity("bogus")


def test_a_changed_rule_changes_the_analyzer_digest(tmp_path: Path) -> None:
    """An upgrade that edits a rule never serves the old findings: the digest is of the code."""
    package = Path(__file__).resolve().parents[2] / "sluice" / "ai"
    copy = tmp_path / "ai"
    shutil.copytree(package, copy)
    before = source_digest(copy.glob("*.py"))
    rules = copy / "python_rules.py"
    rules.write_text(rules.read_text() + "\n# a changed rule\n")
    assert source_digest(copy.glob("*.py")) != before


def test_openai_identity_carries_server_model_and_prompt() -> None:
    def make(**over: Any) -> OpenAIProvider:
        options = {
            "base_url": "http://a/v1",
            "api_key": "k",
            "model": "m",
            "embedding_model": "e",
        }
        return OpenAIProvider(**{**options, **over})  # type: ignore[arg-type]

    base = make().cache_identity("analysis")
    assert base["prompt"] and base["model"] == "m"
    assert make(base_url="http://b/v1").cache_identity("analysis") != base
    assert make(model="other").cache_identity("analysis") != base
    # Transport options (key, timeout, retries) never split the cache.
    assert make(api_key="other", timeout=5.0, max_retries=0).cache_identity("analysis") == base
    assert make().cache_identity("embedding")["model"] == "e"


@settings(max_examples=EXAMPLES, deadline=None)
@given(texts, st.sampled_from(["local", "openai"]), st.sampled_from(["local", "openai"]))
def test_two_providers_never_share_an_analysis(code: str, first: str, second: str) -> None:
    local = LocalProvider().cache_identity("analysis")
    remote = OpenAIProvider("http://a/v1", "k", "sluice-local-1", "e").cache_identity("analysis")
    ids = {"local": local, "openai": remote}
    a = CacheKeyGenerator.analysis(code, "python", None, "sluice-local-1", ids[first])
    b = CacheKeyGenerator.analysis(code, "python", None, "sluice-local-1", ids[second])
    assert (a == b) is (first == second)


def test_an_upgrade_with_changed_rules_never_serves_the_old_findings(
    cache: AIResultCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.ai import local

    provider = LocalProvider()

    def key() -> Any:
        return CacheKeyGenerator.analysis(
            "eval(x)", "python", None, provider.model, provider.cache_identity("analysis")
        )

    assert cache.put("analysis", key(), {"findings": ["old rules"]})
    assert cache.lookup("analysis", key()) == (True, {"findings": ["old rules"]})
    monkeypatch.setattr(local, "analyzer_version", lambda: "the next release's rules")
    assert cache.lookup("analysis", key()) == (False, None)
