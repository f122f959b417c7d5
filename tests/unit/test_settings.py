from pathlib import Path

import pytest

from sluice.errors import ConfigurationError
from sluice.settings import load_settings


def test_defaults_live_under_one_data_directory(tmp_path: Path) -> None:
    s = load_settings({"SLUICE_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'sluice.db'}"
    assert s.result_backend == f"db+sqlite:///{tmp_path.resolve() / 'results.db'}"
    assert s.broker_url == "filesystem://" and s.embedded_broker
    assert s.broker_dir.parent == s.data_dir
    assert s.redis_url is None
    assert s.ai_provider == "local"
    assert (s.cache_enabled, s.async_processing_enabled) == (True, True)
    assert (s.query_cache_enabled, s.cdn_compression_enabled) == (True, True)


@pytest.mark.parametrize(
    "flag,field",
    [
        ("CACHE_ENABLED", "cache_enabled"),
        ("ASYNC_PROCESSING_ENABLED", "async_processing_enabled"),
        ("QUERY_CACHE_ENABLED", "query_cache_enabled"),
        ("CDN_COMPRESSION_ENABLED", "cdn_compression_enabled"),
    ],
)
@pytest.mark.parametrize(
    "raw,expected", [("false", False), ("0", False), ("TRUE", True), ("off", False)]
)
def test_guide_flags_are_read_under_their_own_names(
    flag: str, field: str, raw: str, expected: bool
) -> None:
    assert getattr(load_settings({flag: raw}), field) is expected


def test_bad_flag_names_variable_and_value() -> None:
    with pytest.raises(ConfigurationError, match=r"CACHE_ENABLED='maybe'"):
        load_settings({"CACHE_ENABLED": "maybe"})


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("SLUICE_BROKER_URL", "redis//localhost", "SLUICE_BROKER_URL='redis//localhost'"),
        ("SLUICE_BROKER_URL", "http://x", "scheme 'http'"),
        ("SLUICE_REDIS_URL", "redis://localhost:notaport/0", "SLUICE_REDIS_URL"),
        ("SLUICE_REDIS_URL", "redis:///0", "no host name"),
        ("SLUICE_DATABASE_URL", "mysql://db/x", "SLUICE_DATABASE_URL='mysql://db/x'"),
        ("SLUICE_WORKER_CONCURRENCY", "two", "SLUICE_WORKER_CONCURRENCY='two'"),
        ("SLUICE_WORKER_CONCURRENCY", "0", "below the minimum"),
        ("SLUICE_AI_TIMEOUT", "fast", "SLUICE_AI_TIMEOUT='fast'"),
        ("SLUICE_AI_PROVIDER", "skynet", "SLUICE_AI_PROVIDER='skynet'"),
        ("SLUICE_CODEC", "pickle", "SLUICE_CODEC='pickle'"),
        ("SLUICE_RESULT_BACKEND", "cache+memcached://x/", "SLUICE_RESULT_BACKEND"),
    ],
)
def test_malformed_values_raise_configuration_error(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({name: value})
    assert message in str(info.value)


def test_distributed_settings_and_psycopg_driver() -> None:
    s = load_settings(
        {
            "SLUICE_BROKER_URL": "redis://127.0.0.1:6379/0",
            "SLUICE_REDIS_URL": "redis://127.0.0.1:6379/1",
            "SLUICE_DATABASE_URL": "postgresql://postgres@127.0.0.1/test",
            "SLUICE_WORKER_CONCURRENCY": "4",
        }
    )
    assert not s.embedded_broker
    assert s.redis_url == "redis://127.0.0.1:6379/1"
    assert s.database_url == "postgresql+psycopg://postgres@127.0.0.1/test"
    assert s.worker_concurrency == 4


def test_settings_are_frozen_and_never_show_the_api_key() -> None:
    s = load_settings({"SLUICE_AI_API_KEY": "sk-secret-value"})
    assert s.ai_api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(s)
    with pytest.raises(AttributeError):
        s.cache_enabled = False  # type: ignore[misc]


def test_redact_url_hides_only_the_password() -> None:
    from sluice.settings import redact_url

    assert redact_url("redis://:hunter2@cache:6379/1") == "redis://:***@cache:6379/1"
    assert redact_url("postgresql+psycopg://app:pw@db/x") == "postgresql+psycopg://app:***@db/x"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_visibility_timeout_must_exceed_the_longest_countdown() -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_VISIBILITY_TIMEOUT=60 must exceed"):
        load_settings({"SLUICE_VISIBILITY_TIMEOUT": "60", "SLUICE_MAX_COUNTDOWN": "120"})
    s = load_settings({"SLUICE_VISIBILITY_TIMEOUT": "30", "SLUICE_MAX_COUNTDOWN": "5"})
    assert (s.visibility_timeout, s.max_countdown) == (30.0, 5.0)


def test_handler_modules_are_a_comma_separated_list() -> None:
    s = load_settings({"SLUICE_HANDLER_MODULES": "app.handlers, other.handlers ,"})
    assert s.handler_modules == ("app.handlers", "other.handlers")


def test_ai_limits_parse_every_key_for_several_models() -> None:
    from sluice.settings import AILimit

    raw = "openai:gpt-4o-mini=rpm:500,tpm:200000,usd_per_day:50,reserve:0.2; openai:gpt-4o=tpm:1e4"
    limits = load_settings({"SLUICE_AI_LIMITS": raw}).ai_limits
    assert limits == (
        AILimit("openai", "gpt-4o-mini", rpm=500, tpm=200000, usd_per_day=50, reserve=0.2),
        AILimit("openai", "gpt-4o", tpm=10000),
    )
    assert load_settings({}).ai_limits == ()


def test_ai_limits_accept_models_added_to_the_price_table() -> None:
    env = {
        "SLUICE_AI_LIMITS": "openai:my-model=tpm:10",
        "SLUICE_CACHE_PRICES": '{"my-model": [1, 2]}',
    }
    assert load_settings(env).ai_limits[0].model == "my-model"


@pytest.mark.parametrize("key", ["rpm", "tpm", "usd_per_day"])
@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "ten", "", "nan", "inf", "1e999"])
def test_ai_limits_refuse_non_positive_and_non_numeric_values(key: str, value: str) -> None:
    raw = f"openai:gpt-4o-mini={key}:{value}"
    with pytest.raises(ConfigurationError, match=rf"SLUICE_AI_LIMITS: {key}:{value} in "):
        load_settings({"SLUICE_AI_LIMITS": raw})


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "most", "nan"])
def test_ai_limits_reserve_must_be_a_share(value: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"reserve:{value} .* share in \[0, 1\)"):
        load_settings({"SLUICE_AI_LIMITS": f"openai:gpt-4o-mini=tpm:10,reserve:{value}"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("anthropic:claude=tpm:10", "unknown provider 'anthropic'"),
        ("local:sluice-local-1=tpm:10", "unknown provider 'local'"),
        ("openai:gpt-17=tpm:10", "unknown model 'gpt-17'"),
        ("openai:gpt-4o-mini=tokens:10", "unknown limit 'tokens'"),
        ("openai:gpt-4o-mini=tpm:10,tpm:20", "tpm is given twice"),
        ("openai:gpt-4o-mini=tpm:1;openai:gpt-4o-mini=rpm:1", "limited twice"),
        ("openai=tpm:10", "must look like"),
        ("openai:gpt-4o-mini", "must look like"),
        ("openai:gpt-4o-mini=", "must look like"),
    ],
)
def test_ai_limits_name_the_bad_part(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings({"SLUICE_AI_LIMITS": raw})
