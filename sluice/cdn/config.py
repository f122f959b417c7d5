"""CDN settings: a frozen :class:`CDNSettings` read from ``SLUICE_CDN_*`` environment variables.

They live here rather than in :mod:`sluice.settings` so the CDN can be configured and tested on its
own; validation follows the same rules (a bad value raises :class:`ConfigurationError` naming the
variable). The rollback flag ``CDN_COMPRESSION_ENABLED`` stays in the main settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from sluice.errors import ConfigurationError
from sluice.settings import check_url, env_choice, env_flag, env_number, env_str, get_settings

PROVIDERS = {"none", "cloudfront", "cloudflare", "fastly", "webhook"}
URL_STYLES = {"query", "filename"}
#: Resource types whose browser max-age and CDN TTL can be overridden (``SLUICE_CDN_<TYPE>_MAX_AGE``).
POLICY_TYPES = ("javascript", "css", "image", "font", "html", "other")


@dataclass(frozen=True)
class CDNSettings:
    """Everything the CDN side needs; build it with :func:`load_cdn_settings`."""

    base_url: str = ""
    static_url: str = "/static/"
    static_root: Path | None = None
    url_style: str = "query"
    hash_length: int = 12
    compression_enabled: bool = True
    gzip_level: int = 9
    brotli_quality: int = 11
    runtime_brotli_quality: int = 5
    min_ratio: float = 0.95
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: ``(type, max_age, cdn_ttl)``; -1 keeps the built-in value.
    policy_overrides: tuple[tuple[str, int, int], ...] = ()
    provider: str = "none"
    cloudfront_distribution_id: str = ""
    cloudfront_endpoint_url: str | None = None
    cloudflare_zone_id: str = ""
    cloudflare_api_token: str = field(default="", repr=False)
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_prefix_purge: bool = False
    fastly_service_id: str = ""
    fastly_api_token: str = field(default="", repr=False)
    fastly_api_url: str = "https://api.fastly.com"
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    wildcard_threshold: int = 50
    flush_batch: int = 1000
    flush_interval: float = 60.0
    compress_interval: float = 300.0
    hit_ratio_interval: float = 300.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    http_timeout: float = 30.0
    edge_logs: tuple[str, ...] = ()


def _policy_overrides(env: Mapping[str, str]) -> tuple[tuple[str, int, int], ...]:
    overrides = []
    for name in POLICY_TYPES:
        prefix = f"SLUICE_CDN_{name.upper()}"
        max_age = env_number(env, f"{prefix}_MAX_AGE", -1, int, -1)
        cdn_ttl = env_number(env, f"{prefix}_CDN_TTL", -1, int, -1)
        if max_age >= 0 or cdn_ttl >= 0:
            overrides.append((name, max_age, cdn_ttl))
    return tuple(overrides)


def _optional_url(env: Mapping[str, str], name: str, default: str = "") -> str:
    value = env_str(env, name, default)
    return check_url(value, name, {"http", "https"}).rstrip("/") if value else ""


def load_cdn_settings(env: Mapping[str, str] | None = None) -> CDNSettings:
    """Read and validate every ``SLUICE_CDN_*`` option; raise :class:`ConfigurationError` on a bad one."""
    env = os.environ if env is None else env
    static_url = env_str(env, "SLUICE_CDN_STATIC_URL", "/static/")
    if not static_url.startswith("/") or not static_url.endswith("/"):
        raise ConfigurationError(
            f"SLUICE_CDN_STATIC_URL={static_url!r} must start and end with '/'"
        )
    root = env.get("SLUICE_CDN_STATIC_ROOT", "").strip()
    min_ratio = env_number(env, "SLUICE_CDN_MIN_RATIO", 0.95, float, 0.0)
    if min_ratio > 1:
        raise ConfigurationError(f"SLUICE_CDN_MIN_RATIO={min_ratio!r} must be between 0 and 1")
    levels = {"SLUICE_CDN_GZIP_LEVEL": 9, "SLUICE_CDN_BROTLI_QUALITY": 11}
    for name, top in levels.items():
        if env_number(env, name, top, int, 1) > top:
            raise ConfigurationError(f"{name}={env[name]!r} is above the maximum {top}")
    settings = CDNSettings(
        base_url=_optional_url(env, "SLUICE_CDN_BASE_URL"),
        static_url=static_url,
        static_root=Path(root).expanduser().resolve() if root else None,
        url_style=env_choice(env, "SLUICE_CDN_URL_STYLE", "query", URL_STYLES),
        hash_length=env_number(env, "SLUICE_CDN_HASH_LENGTH", 12, int, 8),
        compression_enabled=get_settings().cdn_compression_enabled,
        gzip_level=env_number(env, "SLUICE_CDN_GZIP_LEVEL", 9, int, 1),
        brotli_quality=env_number(env, "SLUICE_CDN_BROTLI_QUALITY", 11, int, 1),
        runtime_brotli_quality=min(
            11, env_number(env, "SLUICE_CDN_RUNTIME_BROTLI_QUALITY", 5, int, 1)
        ),
        min_ratio=min_ratio,
        workers=env_number(env, "SLUICE_CDN_WORKERS", os.cpu_count() or 1, int, 1),
        policy_overrides=_policy_overrides(env),
        provider=env_choice(env, "SLUICE_CDN_PROVIDER", "none", PROVIDERS),
        cloudfront_distribution_id=env_str(env, "SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID", ""),
        cloudfront_endpoint_url=_optional_url(env, "SLUICE_CDN_CLOUDFRONT_ENDPOINT_URL") or None,
        cloudflare_zone_id=env_str(env, "SLUICE_CDN_CLOUDFLARE_ZONE_ID", ""),
        cloudflare_api_token=env_str(env, "SLUICE_CDN_CLOUDFLARE_API_TOKEN", ""),
        cloudflare_api_url=_optional_url(
            env, "SLUICE_CDN_CLOUDFLARE_API_URL", "https://api.cloudflare.com/client/v4"
        ),
        cloudflare_prefix_purge=env_flag(env, "SLUICE_CDN_CLOUDFLARE_PREFIX_PURGE", False),
        fastly_service_id=env_str(env, "SLUICE_CDN_FASTLY_SERVICE_ID", ""),
        fastly_api_token=env_str(env, "SLUICE_CDN_FASTLY_API_TOKEN", ""),
        fastly_api_url=_optional_url(env, "SLUICE_CDN_FASTLY_API_URL", "https://api.fastly.com"),
        webhook_url=_optional_url(env, "SLUICE_CDN_WEBHOOK_URL"),
        webhook_secret=env_str(env, "SLUICE_CDN_WEBHOOK_SECRET", ""),
        wildcard_threshold=env_number(env, "SLUICE_CDN_WILDCARD_THRESHOLD", 50, int, 2),
        flush_batch=env_number(env, "SLUICE_CDN_FLUSH_BATCH", 1000, int, 1),
        flush_interval=env_number(env, "SLUICE_CDN_FLUSH_INTERVAL", 60.0, float, 1),
        compress_interval=env_number(env, "SLUICE_CDN_COMPRESS_INTERVAL", 300.0, float, 1),
        hit_ratio_interval=env_number(env, "SLUICE_CDN_HIT_RATIO_INTERVAL", 300.0, float, 1),
        max_retries=env_number(env, "SLUICE_CDN_MAX_RETRIES", 5, int, 0),
        backoff_base=env_number(env, "SLUICE_CDN_BACKOFF_BASE", 1.0, float, 0),
        backoff_max=env_number(env, "SLUICE_CDN_BACKOFF_MAX", 60.0, float, 0),
        http_timeout=env_number(env, "SLUICE_CDN_HTTP_TIMEOUT", 30.0, float, 0.001),
        edge_logs=tuple(
            p.strip() for p in env.get("SLUICE_CDN_EDGE_LOGS", "").split(",") if p.strip()
        ),
    )
    _check_provider(settings)
    return settings


_REQUIRED = {
    "cloudfront": (("cloudfront_distribution_id", "SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID"),),
    "cloudflare": (
        ("cloudflare_zone_id", "SLUICE_CDN_CLOUDFLARE_ZONE_ID"),
        ("cloudflare_api_token", "SLUICE_CDN_CLOUDFLARE_API_TOKEN"),
    ),
    "fastly": (
        ("fastly_service_id", "SLUICE_CDN_FASTLY_SERVICE_ID"),
        ("fastly_api_token", "SLUICE_CDN_FASTLY_API_TOKEN"),
    ),
    "webhook": (("webhook_url", "SLUICE_CDN_WEBHOOK_URL"),),
}


def _check_provider(settings: CDNSettings) -> None:
    for attribute, variable in _REQUIRED.get(settings.provider, ()):
        if not getattr(settings, attribute):
            raise ConfigurationError(f"SLUICE_CDN_PROVIDER={settings.provider} needs {variable}")
    if settings.provider == "cloudflare" and not settings.base_url:
        # Cloudflare purges full URLs, so the public host must be known.
        raise ConfigurationError("SLUICE_CDN_PROVIDER=cloudflare needs SLUICE_CDN_BASE_URL")


@cache
def get_cdn_settings() -> CDNSettings:
    """The process-wide CDN settings, read once from ``os.environ``."""
    return load_cdn_settings()
