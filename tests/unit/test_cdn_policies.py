"""Cache policies: the guide's table, immutable only when versioned, overrides."""

from __future__ import annotations

import pytest

from sluice.cdn.config import load_cdn_settings
from sluice.cdn.policies import (
    RESOURCE_TYPES,
    CachePolicy,
    PolicyTable,
    content_type,
    is_compressible,
)
from sluice.errors import ConfigurationError


@pytest.mark.parametrize(
    ("path", "max_age", "cdn_ttl", "immutable"),
    [
        ("js/app.js", 31536000, 31536000, True),
        ("css/site.css", 31536000, 31536000, True),
        ("img/logo.png", 2592000, 2592000, False),
        ("fonts/a.woff2", 31536000, 31536000, True),
        ("index.html", 0, 3600, False),
    ],
)
def test_guide_table(path: str, max_age: int, cdn_ttl: int, immutable: bool) -> None:
    policy = PolicyTable().policy_for(path)
    assert (policy.max_age, policy.cdn_ttl, policy.immutable) == (max_age, cdn_ttl, immutable)


def test_immutable_only_for_versioned_urls() -> None:
    policy = RESOURCE_TYPES["javascript"].policy
    assert policy.cache_control(True) == "public, max-age=31536000, immutable"
    assert policy.cache_control(False) == "public, max-age=31536000"
    assert "immutable" not in RESOURCE_TYPES["image"].policy.cache_control(True)


def test_html_gets_cdn_ttl_separately() -> None:
    headers = RESOURCE_TYPES["html"].policy.headers(versioned=False)
    assert headers == {
        "Cache-Control": "public, max-age=0, s-maxage=3600, must-revalidate",
        "Surrogate-Control": "max-age=3600",
    }


def test_unknown_type_is_short_lived() -> None:
    assert PolicyTable().type_for("data.bin").name == "other"
    assert CachePolicy(3600, 3600).cache_control(True) == "public, max-age=3600"


def test_overrides_from_environment() -> None:
    settings = load_cdn_settings(
        {"SLUICE_CDN_HTML_CDN_TTL": "600", "SLUICE_CDN_IMAGE_MAX_AGE": "60"}
    )
    table = PolicyTable(settings)
    assert table.policy_for("a.html") == CachePolicy(0, 600)
    assert table.policy_for("a.png") == CachePolicy(60, 2592000)
    assert table.policy_for("a.js") == RESOURCE_TYPES["javascript"].policy


def test_bad_override_names_variable() -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_CDN_JAVASCRIPT_MAX_AGE"):
        load_cdn_settings({"SLUICE_CDN_JAVASCRIPT_MAX_AGE": "soon"})


def test_compressibility_and_types() -> None:
    assert is_compressible("a.JS") and is_compressible("a.svg") and is_compressible("f.ttf")
    assert not is_compressible("a.png") and not is_compressible("f.woff2")
    assert content_type("a.css") == "text/css; charset=utf-8"
    assert content_type("a.woff2") == "font/woff2"
