"""CDN settings validation."""

from __future__ import annotations

import pytest

from sluice.cdn.config import load_cdn_settings
from sluice.errors import ConfigurationError


def test_defaults() -> None:
    settings = load_cdn_settings({})
    assert (settings.provider, settings.url_style, settings.static_url) == (
        "none",
        "query",
        "/static/",
    )
    assert settings.brotli_quality == 11 and settings.gzip_level == 9 and settings.min_ratio == 0.95


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLUICE_CDN_BASE_URL": "ftp://cdn"}, "SLUICE_CDN_BASE_URL"),
        ({"SLUICE_CDN_STATIC_URL": "static"}, "SLUICE_CDN_STATIC_URL"),
        ({"SLUICE_CDN_URL_STYLE": "hash"}, "SLUICE_CDN_URL_STYLE"),
        ({"SLUICE_CDN_BROTLI_QUALITY": "12"}, "SLUICE_CDN_BROTLI_QUALITY"),
        ({"SLUICE_CDN_GZIP_LEVEL": "0"}, "SLUICE_CDN_GZIP_LEVEL"),
        ({"SLUICE_CDN_MIN_RATIO": "1.5"}, "SLUICE_CDN_MIN_RATIO"),
        ({"SLUICE_CDN_PROVIDER": "akamai"}, "SLUICE_CDN_PROVIDER"),
        ({"SLUICE_CDN_PROVIDER": "cloudfront"}, "SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID"),
        (
            {"SLUICE_CDN_PROVIDER": "fastly", "SLUICE_CDN_FASTLY_SERVICE_ID": "s"},
            "SLUICE_CDN_FASTLY_API_TOKEN",
        ),
        (
            {
                "SLUICE_CDN_PROVIDER": "cloudflare",
                "SLUICE_CDN_CLOUDFLARE_ZONE_ID": "z",
                "SLUICE_CDN_CLOUDFLARE_API_TOKEN": "t",
            },
            "SLUICE_CDN_BASE_URL",
        ),
        ({"SLUICE_CDN_CLOUDFLARE_PREFIX_PURGE": "maybe"}, "SLUICE_CDN_CLOUDFLARE_PREFIX_PURGE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        load_cdn_settings(env)


def test_secrets_not_in_repr() -> None:
    settings = load_cdn_settings(
        {
            "SLUICE_CDN_PROVIDER": "webhook",
            "SLUICE_CDN_WEBHOOK_URL": "http://127.0.0.1:1/x",
            "SLUICE_CDN_WEBHOOK_SECRET": "hunter2",
        }
    )
    assert "hunter2" not in repr(settings)


def test_compression_flag_comes_from_main_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.settings import get_settings

    monkeypatch.setenv("CDN_COMPRESSION_ENABLED", "false")
    get_settings.cache_clear()
    try:
        assert load_cdn_settings({}).compression_enabled is False
    finally:
        monkeypatch.delenv("CDN_COMPRESSION_ENABLED")
        get_settings.cache_clear()
