"""Settings fuzzing: every variable :mod:`sluice.settings` reads, set to garbage.

Contract: :func:`load_settings` returns settings or raises one :class:`ConfigurationError` naming
the variable, at once (start-up), never a traceback of another kind and never a secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import sluice.settings as settings_module
from sluice.errors import ConfigurationError
from sluice.settings import CDN_POLICY_TYPES, load_settings
from tests.conftest import run_sluice, service_env
from tests.robustness.contract import EXAMPLES, keeps_contract
from tests.robustness.strategies import any_text

_SOURCE = Path(settings_module.__file__).read_text()
#: Every variable the settings module reads (it is the only module that reads the environment).
VARIABLES = sorted(
    set(re.findall(r'"((?:SLUICE|CACHE|ASYNC|QUERY|CDN)_[A-Z0-9_]+)"', _SOURCE))
    | {
        f"SLUICE_CDN_{kind.upper()}_{what}"
        for kind in CDN_POLICY_TYPES
        for what in ("MAX_AGE", "CDN_TTL")
    }
)
GARBAGE = st.one_of(
    any_text,
    st.sampled_from(
        [
            "-1",
            "0",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "9" * 5000,
            "",
            " ",
            "true",
            "maybe",
            "redis://u:TopSecretPW1@h:port/0",
            "mysql://u:TopSecretPW1@h/x",
            "$x",
            "/s/ { }",
            "a=1:2,b",
            "=",
            ",",
            "::",
            "{}",
            "[1]",
            '{"m": ["x", 1]}',
            "~nouser/x",
            "/dev/null",
        ]
    ),
    st.integers().map(str),
    st.floats().map(str),
)


def test_the_variable_list_is_complete() -> None:
    assert len(VARIABLES) > 80 and "SLUICE_RATE_LIMITS" in VARIABLES
    assert "SLUICE_CACHE_L2_TIMEOUT" in VARIABLES and "SLUICE_LOG_FORMAT" in VARIABLES


@given(name=st.sampled_from(VARIABLES), value=GARBAGE)
@settings(max_examples=EXAMPLES * 3, deadline=None)
def test_one_bad_variable_is_one_configuration_error_naming_it(name: str, value: str) -> None:
    outcome = keeps_contract(lambda: load_settings({name: value}))
    event("refused" if outcome.error else "accepted")
    if outcome.error is not None:
        assert isinstance(outcome.error, ConfigurationError)
        message = str(outcome.error)
        assert name in message or (name.startswith("SLUICE_CDN_") and "SLUICE_CDN_" in message)
        assert "TopSecretPW1" not in message


@given(env=st.dictionaries(st.sampled_from(VARIABLES), GARBAGE, max_size=8))
@settings(max_examples=EXAMPLES, deadline=None)
def test_any_mix_of_variables_keeps_the_contract(env: dict[str, str]) -> None:
    outcome = keeps_contract(lambda: load_settings(env))
    assert outcome.error is None or isinstance(outcome.error, ConfigurationError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLUICE_CACHE_L2_TIMEOUT", "-1"),
        ("SLUICE_CACHE_TTL_ANALYSIS", "soon"),
        ("SLUICE_CACHE_PRICES", '{"m": [1]}'),
        ("SLUICE_CACHE_PRICES", '{"m": [-1, 1]}'),
        ("SLUICE_RATE_LIMITS", "bad"),
        ("SLUICE_RATE_LIMITS", "a=0"),
        ("SLUICE_RATE_LIMITS", "a=nan"),
        ("SLUICE_RATE_LIMITS", "a=1:0.5"),
        ("SLUICE_RATE_LIMITS", "=5"),
        ("SLUICE_LOG_FORMAT", "xml"),
        ("SLUICE_CDN_GZIP_LEVEL", "99"),
        ("SLUICE_CDN_STATIC_URL", '/s/ { return 200 "injected"; } location /x/'),
        ("SLUICE_HANDLER_MODULES", "not a module"),
        ("SLUICE_DATA_DIR", "/dev/null"),
        ("SLUICE_DATA_DIR", "/dev/null/below"),
    ],
)
def test_late_failures_now_fail_at_start(name: str, value: str) -> None:
    """These were accepted at start and failed later, in a task or a request."""
    with pytest.raises(ConfigurationError, match=re.escape(name)):
        load_settings({name: value})


URL_VARIABLES = [
    "SLUICE_DATABASE_URL",
    "SLUICE_BROKER_URL",
    "SLUICE_REDIS_URL",
    "SLUICE_RESULT_BACKEND",
    "SLUICE_AI_BASE_URL",
    "SLUICE_CDN_BASE_URL",
    "SLUICE_CDN_WEBHOOK_URL",
]
BAD_URLS = [
    "mysql://u:TopSecretPW1@h/x",
    "redis://u:TopSecretPW1@h:port/0",
    "redis://:TopSecretPW1@h:99999999/0",
    "redis://u:Top/SecretPW1@h/0",
    "redis://u:TopSecretPW1@@h/0",
    "ftp://u:TopSecretPW1@h/",
    "http://u:TopSecretPW1@[::1/",
    "cache+memcached://u:TopSecretPW1@h/",
]


@pytest.mark.parametrize("name", URL_VARIABLES)
@pytest.mark.parametrize("value", BAD_URLS)
def test_a_bad_url_never_shows_its_password(name: str, value: str) -> None:
    outcome = keeps_contract(lambda: load_settings({name: value}))
    if "port" in value or "mysql" in value or "ftp" in value or "memcached" in value:
        assert outcome.error is not None, f"{name}={value} was accepted"
    if outcome.error is not None:
        assert "TopSecretPW1" not in str(outcome.error) and "Secret" not in str(outcome.error)


@pytest.mark.parametrize(
    ("name", "value"), [("SLUICE_CACHE_L2_TIMEOUT", "-1"), ("SLUICE_RATE_LIMITS", "bad")]
)
def test_sluice_analyze_refuses_a_bad_setting_before_running_anything(
    tmp_path: Path, name: str, value: str
) -> None:
    """Before: accepted, then every file retried six times and dead-lettered (60 s, DLQ entries)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("x = 1\n")
    done = run_sluice("analyze", str(tree), env=service_env(tmp_path, **{name: value}))
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {name}") and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created
