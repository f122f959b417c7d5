"""One frozen :class:`Settings` object read from the environment.

Every option is a ``SLUICE_*`` variable, except the guide's rollback flags, which keep their own names
(``CACHE_ENABLED``, ``ASYNC_PROCESSING_ENABLED``, ``QUERY_CACHE_ENABLED``, ``CDN_COMPRESSION_ENABLED``).
With nothing set, everything lives under one data directory and no service is needed: the broker is
kombu's filesystem transport, results and the database are SQLite files, the shared store is diskcache.

This module is the only one that reads the environment. :func:`load_settings` reads and validates
every section (core, cache policy, CDN, rate limits, log format) at once, so a typo anywhere fails at
start-up with one :class:`ConfigurationError` naming the variable and its value, not when a task
first needs it. The sections' loaders (:func:`load_cache_options`, :func:`load_cdn_settings`,
:func:`load_rate_limits`, :func:`load_log_format`, :func:`load_secrets`) are public so their
subsystems can read a fresh value, always through the same validation.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sluice.errors import ConfigurationError
from sluice.pricing import DEFAULT_PRICES
from sluice.redaction import redact

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

BROKER_SCHEMES = {
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "pyamqp",
    "filesystem",
    "memory",
    "sqla+sqlite",
}
REDIS_SCHEMES = {"redis", "rediss", "unix"}
DATABASE_SCHEMES = {"sqlite", "postgresql", "postgresql+psycopg"}
AI_PROVIDERS = {"local", "openai"}
#: Providers that call a hosted API, and so can be given limits in SLUICE_AI_LIMITS.
LIMITED_AI_PROVIDERS = {"openai"}
CODECS = {"json", "msgpack"}


@dataclass(frozen=True)
class AILimit:
    """One provider and model's limits from ``SLUICE_AI_LIMITS`` (None: not limited).

    :ivar rpm: requests per minute; :ivar tpm: tokens per minute (prompt + ``max_tokens``);
    :ivar usd_per_day: spending budget per UTC day; :ivar reserve: the share of each limit only
    HIGH and CRITICAL work may use (0 <= reserve < 1).
    """

    provider: str
    model: str
    rpm: float | None = None
    tpm: float | None = None
    usd_per_day: float | None = None
    reserve: float = 0.0


@dataclass(frozen=True)
class Settings:
    """All of sluice's configuration. Build it with :func:`load_settings`; never mutate it."""

    data_dir: Path
    broker_url: str
    result_backend: str
    redis_url: str | None
    database_url: str
    key_prefix: str = "sluice:"
    codec: str = "msgpack"
    compress_min_bytes: int = 1024
    ai_provider: str = "local"
    ai_model: str = "sluice-local-1"
    ai_base_url: str = "https://api.openai.com/v1"
    ai_api_key: str | None = field(default=None, repr=False)
    ai_embedding_model: str = "text-embedding-3-small"
    ai_timeout: float = 60.0
    ai_max_retries: int = 4
    ai_limits: tuple[AILimit, ...] = ()
    #: The sliding window rpm and tpm count over; 60 s means what the names say (tests shorten it).
    ai_limit_window: float = 60.0
    #: The price table (``SLUICE_CACHE_PRICES`` over the defaults) as ``(model, (prompt, completion))``
    #: USD per 1K tokens; a tuple so settings stay hashable (see :attr:`prices`).
    ai_prices: tuple[tuple[str, tuple[float, float]], ...] = tuple(DEFAULT_PRICES.items())
    max_file_bytes: int = 1_048_576
    worker_concurrency: int = 2
    task_timeout: float = 600.0
    retention_days: float = 30.0
    handler_modules: tuple[str, ...] = ()
    max_payload_bytes: int = 1_048_576
    max_countdown: float = 3600.0
    visibility_timeout: float = 4 * 3600.0
    batch_flush_every: int = 100
    batch_flush_interval: float = 1.0
    watchdog_interval: float = 5.0
    log_level: str = "INFO"
    cache_enabled: bool = True
    async_processing_enabled: bool = True
    query_cache_enabled: bool = True
    cdn_compression_enabled: bool = True
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    log_format: str = "text"
    rate_limits: tuple[RateLimitSpec, ...] = ()
    #: ``CacheConfig`` fields overridden by ``SLUICE_CACHE_*`` (see :func:`load_cache_options`).
    cache_options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    cdn: CDNSettings = field(default_factory=lambda: CDNSettings())

    @property
    def embedded_broker(self) -> bool:
        """True when the broker needs no server (the command starts its own worker)."""
        return self.broker_url.startswith(("filesystem://", "memory://"))

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """USD per 1K prompt and completion tokens, by model."""
        return dict(self.ai_prices)

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_number(
    env: Mapping[str, str], name: str, default: T, kind: Callable[[str], T], minimum: float
) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid {kind.__name__}; set it to a number >= {minimum:g}"
        ) from None
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigurationError(f"{name}={raw!r} must be a finite number")
    if value < minimum:  # type: ignore[operator]
        raise ConfigurationError(f"{name}={raw!r} is below the minimum {minimum:g}")
    return value


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name}={env[name]!r} is not a boolean; use true or false")


def check_url(value: str, name: str, schemes: set[str]) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        # urllib's message quotes the bad port, which is the password when the URL is malformed.
        raise ConfigurationError(
            f"{name}={value!r} is not a valid URL: its host or port is malformed"
        ) from None
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ConfigurationError(
            f"{name}={value!r} has scheme {parts.scheme or '(none)'!r}; expected one of: {allowed}"
        )
    network = parts.scheme not in {"sqlite", "filesystem", "memory", "sqla+sqlite", "unix"}
    if network and not parts.hostname:
        raise ConfigurationError(f"{name}={value!r} has no host name")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: set[str]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigurationError(f"{name}={value!r} must be one of: {', '.join(sorted(choices))}")
    return value


#: The same function as :func:`sluice.redaction.redact`, under the name ``sluice config`` uses.
redact_url = redact


_LIMIT_KEYS = {"rpm", "tpm", "usd_per_day", "reserve"}


def parse_ai_limits(raw: str, prices: Mapping[str, object]) -> tuple[AILimit, ...]:
    """``SLUICE_AI_LIMITS``: ``provider:model=key:value,...`` entries separated by ``;``.

    Keys are ``rpm``, ``tpm``, ``usd_per_day`` (each > 0) and ``reserve`` (0 <= share < 1). The
    model must be in the price table (``prices``), which the budget needs. Raises one
    :class:`ConfigurationError` naming the first bad part and what would be valid.
    """
    limits: dict[tuple[str, str], AILimit] = {}
    example = "openai:gpt-4o-mini=rpm:500,tpm:200000,usd_per_day:50,reserve:0.2"
    for entry in filter(None, (part.strip() for part in raw.split(";"))):
        target, equals, spec = entry.partition("=")
        provider, colon, model = (x.strip() for x in target.partition(":"))
        if not equals or not colon or not provider or not model or not spec.strip():
            raise ConfigurationError(f"SLUICE_AI_LIMITS entry {entry!r} must look like {example!r}")
        if provider not in LIMITED_AI_PROVIDERS:
            raise ConfigurationError(
                f"SLUICE_AI_LIMITS: unknown provider {provider!r} in {entry!r}; limits apply to: "
                f"{', '.join(sorted(LIMITED_AI_PROVIDERS))}"
            )
        if model not in prices:
            raise ConfigurationError(
                f"SLUICE_AI_LIMITS: unknown model {model!r} in {entry!r}; known models: "
                f"{', '.join(sorted(prices))} (add its price to SLUICE_CACHE_PRICES)"
            )
        if (provider, model) in limits:
            raise ConfigurationError(f"SLUICE_AI_LIMITS: {provider}:{model} is limited twice")
        values: dict[str, float] = {}
        for item in (p.strip() for p in spec.split(",")):
            key, _, number = (x.strip() for x in item.partition(":"))
            if key not in _LIMIT_KEYS:
                raise ConfigurationError(
                    f"SLUICE_AI_LIMITS: unknown limit {key!r} in {entry!r}; use "
                    f"{', '.join(sorted(_LIMIT_KEYS))}"
                )
            if key in values:
                raise ConfigurationError(f"SLUICE_AI_LIMITS: {key} is given twice in {entry!r}")
            values[key] = _limit_value(entry, key, number)
        limits[(provider, model)] = AILimit(provider, model, **values)
    return tuple(limits.values())


def _limit_value(entry: str, key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if key == "reserve":
        if not 0 <= value < 1:
            raise ConfigurationError(
                f"SLUICE_AI_LIMITS: reserve:{raw} in {entry!r} must be a share in [0, 1), "
                "e.g. reserve:0.2"
            )
    elif not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"SLUICE_AI_LIMITS: {key}:{raw} in {entry!r} must be a number > 0 "
            "(leave the key out for no limit)"
        )
    return value


def _environment(env: Mapping[str, str] | None) -> Mapping[str, str]:
    # The one place the process environment is read.
    return os.environ if env is None else env


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    base = _environment(env).get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sluice"


def _watchdog_interval(env: Mapping[str, str]) -> float:
    """Seconds between consumer canaries; zero or below would never (or always) see a stall."""
    interval = env_number(env, "SLUICE_WATCHDOG_INTERVAL", 5.0, float, -math.inf)
    if interval <= 0:
        raise ConfigurationError(
            f"SLUICE_WATCHDOG_INTERVAL={interval:g} must be above 0 seconds (a stall is reported "
            "after 3 intervals without a delivery; 5 is the default)"
        )
    return interval


def check_directory(raw: str, name: str) -> Path:
    """``raw`` as an absolute path that is, or can be created as, a directory."""
    try:
        path = Path(raw).expanduser().resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigurationError(f"{name}={raw!r} is not a usable path: {exc}") from None
    if not existing.is_dir():
        what = "is" if existing == path else f"is under {str(existing)!r}, which is"
        raise ConfigurationError(
            f"{name}={raw!r} {what} a file, not a directory; point it at a directory"
        )
    return path


# -- logs and secrets --------------------------------------------------------------------------

LOG_FORMATS = ("text", "json")
#: Environment variables whose values are secrets wherever they appear.
SECRET_VARIABLES = (
    "SLUICE_AI_API_KEY",
    "OPENAI_API_KEY",
    "SLUICE_CDN_CLOUDFLARE_API_TOKEN",
    "SLUICE_CDN_FASTLY_API_TOKEN",
    "SLUICE_CDN_WEBHOOK_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "POSTGRES_PASSWORD",
    "FLOWER_BASIC_AUTH",
)


def load_log_format(env: Mapping[str, str] | None = None) -> str:
    """``SLUICE_LOG_FORMAT`` (``text`` or ``json``)."""
    value = env_str(_environment(env), "SLUICE_LOG_FORMAT", "text").lower()
    if value not in LOG_FORMATS:
        raise ConfigurationError(
            f"SLUICE_LOG_FORMAT={value!r} must be one of: {', '.join(LOG_FORMATS)}"
        )
    return value


def load_secrets(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret values set in the environment (short ones ignored: too ambiguous to mask)."""
    values = (_environment(env).get(name, "") for name in SECRET_VARIABLES)
    return tuple(v for v in values if len(v) >= 6)


# -- rate limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitSpec:
    """One named limit of ``SLUICE_RATE_LIMITS``: ``rate`` tokens per second, ``burst`` saved up."""

    name: str
    rate: float
    burst: float


_RATE_LIMIT_NAME = re.compile(r"[\w.:-]+")


def parse_rate_limit_specs(raw: str) -> tuple[RateLimitSpec, ...]:
    """Parse ``name=rate:burst,...`` (burst optional, default ``rate``)."""
    specs = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, equals, spec = (item.strip() for item in part.partition("="))
        rate_raw, _, burst_raw = spec.partition(":")
        try:
            rate = float(rate_raw)
            burst = float(burst_raw) if burst_raw.strip() else rate
        except ValueError:
            rate = burst = math.nan
        if not (
            equals
            and _RATE_LIMIT_NAME.fullmatch(name)
            and math.isfinite(rate)
            and math.isfinite(burst)
            and rate > 0
            and burst >= 1
        ):
            raise ConfigurationError(
                f"SLUICE_RATE_LIMITS: {part!r} must look like name=RATE:BURST, e.g. openai=100:200 "
                "(RATE > 0 tokens per second, BURST >= 1)"
            )
        specs.append(RateLimitSpec(name, rate, burst))
    return tuple(specs)


def load_rate_limits(env: Mapping[str, str] | None = None) -> tuple[RateLimitSpec, ...]:
    """The named limits of ``SLUICE_RATE_LIMITS``."""
    return parse_rate_limit_specs(_environment(env).get("SLUICE_RATE_LIMITS", ""))


# -- cache policy ------------------------------------------------------------------------------

#: ``SLUICE_CACHE_*`` numbers: variable -> (CacheConfig field, type, minimum).
CACHE_NUMBERS: dict[str, tuple[str, Callable[[str], Any], float]] = {
    "SLUICE_CACHE_TTL_ANALYSIS": ("ttl_analysis", float, 0.001),
    "SLUICE_CACHE_TTL_EMBEDDING": ("ttl_embedding", float, 0.001),
    "SLUICE_CACHE_TTL_RESPONSE": ("ttl_response", float, 0.001),
    "SLUICE_CACHE_MAX_TEMPERATURE": ("max_cacheable_temperature", float, 0.0),
    "SLUICE_CACHE_MAX_ENTRY_BYTES": ("max_entry_bytes", int, 1),
    "SLUICE_CACHE_L1_MAX_ENTRIES": ("l1_max_entries", int, 1),
    "SLUICE_CACHE_L1_MAX_BYTES": ("l1_max_bytes", int, 1),
    "SLUICE_CACHE_L2_TIMEOUT": ("l2_timeout", float, 0.001),
    "SLUICE_CACHE_PRICE_PER_CALL": ("price_per_call_usd", float, 0.0),
    "SLUICE_CACHE_LOCK_LEASE": ("lock_lease", float, 0.1),
    "SLUICE_CACHE_STAMPEDE_WAIT": ("stampede_wait", float, 0.0),
}


def load_cache_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``CacheConfig`` fields that ``SLUICE_CACHE_*`` variables override, validated.

    ``prices`` holds only the models named in ``SLUICE_CACHE_PRICES`` (USD per 1K prompt and
    completion tokens); the cache policy merges them over its defaults.
    """
    env = _environment(env)
    options: dict[str, Any] = {}
    for variable, (name, kind, minimum) in CACHE_NUMBERS.items():
        if env.get(variable, "").strip():
            options[name] = env_number(env, variable, 0, kind, minimum)
    prices_raw = env.get("SLUICE_CACHE_PRICES", "").strip()
    if prices_raw:
        options["prices"] = _parse_prices(prices_raw)
    return options


def _parse_prices(raw: str) -> dict[str, tuple[float, float]]:
    try:
        data = json.loads(raw)
        prices = {str(m): (float(p[0]), float(p[1])) for m, p in data.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        prices = {"": (math.nan, math.nan)}
    if not all(math.isfinite(v) and v >= 0 for pair in prices.values() for v in pair):
        raise ConfigurationError(
            f"SLUICE_CACHE_PRICES={raw!r} must be JSON like "
            '{"gpt-4o": [0.0025, 0.01]} (USD per 1K prompt and completion tokens, >= 0)'
        )
    return prices


# -- CDN ---------------------------------------------------------------------------------------

CDN_PROVIDERS = {"none", "cloudfront", "cloudflare", "fastly", "webhook"}
CDN_URL_STYLES = {"query", "filename"}
#: Resource types whose browser max-age and CDN TTL can be overridden (``SLUICE_CDN_<TYPE>_MAX_AGE``).
CDN_POLICY_TYPES = ("javascript", "css", "image", "font", "html", "other")
# A URL path prefix nginx takes literally in a ``location``: no space, quote, ``;``, brace or ``$``.
_NGINX_URL_PREFIX = re.compile(r"/(?:[A-Za-z0-9._~%+@!,=-]+/)*")
# What nginx cannot take literally even inside a quoted string: ``$`` starts a variable.
_NGINX_UNQUOTABLE = re.compile(r'[$"\\\x00-\x1f\x7f]')


def is_nginx_url_prefix(value: str) -> bool:
    """Whether ``value`` is a ``/.../`` prefix nginx reads literally in a ``location``."""
    return bool(_NGINX_URL_PREFIX.fullmatch(value))


def is_nginx_quotable(value: str) -> bool:
    """Whether ``value`` means itself inside an nginx quoted string (no ``$`` variables)."""
    return bool(value.strip()) and not _NGINX_UNQUOTABLE.search(value)


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
    for name in CDN_POLICY_TYPES:
        prefix = f"SLUICE_CDN_{name.upper()}"
        max_age = env_number(env, f"{prefix}_MAX_AGE", -1, int, -1)
        cdn_ttl = env_number(env, f"{prefix}_CDN_TTL", -1, int, -1)
        if max_age >= 0 or cdn_ttl >= 0:
            overrides.append((name, max_age, cdn_ttl))
    return tuple(overrides)


def _optional_url(env: Mapping[str, str], name: str, default: str = "") -> str:
    value = env_str(env, name, default)
    return check_url(value, name, {"http", "https"}).rstrip("/") if value else ""


def _static_root(env: Mapping[str, str]) -> Path | None:
    raw = env.get("SLUICE_CDN_STATIC_ROOT", "").strip()
    if not raw:
        return None
    root = check_directory(raw, "SLUICE_CDN_STATIC_ROOT")
    if not is_nginx_quotable(str(root)):
        raise ConfigurationError(
            f"SLUICE_CDN_STATIC_ROOT={raw!r} contains a character nginx would not take literally "
            "($, a quote, a backslash or a control character); move the assets to a plain path"
        )
    return root


def load_cdn_settings(
    env: Mapping[str, str] | None = None, compression_enabled: bool | None = None
) -> CDNSettings:
    """Read and validate every ``SLUICE_CDN_*`` option.

    ``compression_enabled`` defaults to the rollback flag ``CDN_COMPRESSION_ENABLED`` in ``env``.
    """
    env = _environment(env)
    static_url = env_str(env, "SLUICE_CDN_STATIC_URL", "/static/")
    if not static_url.startswith("/") or not static_url.endswith("/"):
        raise ConfigurationError(
            f"SLUICE_CDN_STATIC_URL={static_url!r} must start and end with '/'"
        )
    if not is_nginx_url_prefix(static_url):
        raise ConfigurationError(
            f"SLUICE_CDN_STATIC_URL={static_url!r} may only contain letters, digits and . _ ~ % + "
            "@ ! , = - between its slashes (no spaces, quotes, ';', braces or '$')"
        )
    min_ratio = env_number(env, "SLUICE_CDN_MIN_RATIO", 0.95, float, 0.0)
    if min_ratio > 1:
        raise ConfigurationError(f"SLUICE_CDN_MIN_RATIO={min_ratio!r} must be between 0 and 1")
    levels = {"SLUICE_CDN_GZIP_LEVEL": 9, "SLUICE_CDN_BROTLI_QUALITY": 11}
    for name, top in levels.items():
        if env_number(env, name, top, int, 1) > top:
            raise ConfigurationError(f"{name}={env[name]!r} is above the maximum {top}")
    if compression_enabled is None:
        compression_enabled = env_flag(env, "CDN_COMPRESSION_ENABLED", True)
    settings = CDNSettings(
        base_url=_optional_url(env, "SLUICE_CDN_BASE_URL"),
        static_url=static_url,
        static_root=_static_root(env),
        url_style=env_choice(env, "SLUICE_CDN_URL_STYLE", "query", CDN_URL_STYLES),
        hash_length=env_number(env, "SLUICE_CDN_HASH_LENGTH", 12, int, 8),
        compression_enabled=compression_enabled,
        gzip_level=env_number(env, "SLUICE_CDN_GZIP_LEVEL", 9, int, 1),
        brotli_quality=env_number(env, "SLUICE_CDN_BROTLI_QUALITY", 11, int, 1),
        runtime_brotli_quality=min(
            11, env_number(env, "SLUICE_CDN_RUNTIME_BROTLI_QUALITY", 5, int, 1)
        ),
        min_ratio=min_ratio,
        workers=env_number(env, "SLUICE_CDN_WORKERS", os.cpu_count() or 1, int, 1),
        policy_overrides=_policy_overrides(env),
        provider=env_choice(env, "SLUICE_CDN_PROVIDER", "none", CDN_PROVIDERS),
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
    _check_cdn_provider(settings)
    return settings


_CDN_REQUIRED = {
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


def _check_cdn_provider(settings: CDNSettings) -> None:
    for attribute, variable in _CDN_REQUIRED.get(settings.provider, ()):
        if not getattr(settings, attribute):
            raise ConfigurationError(f"SLUICE_CDN_PROVIDER={settings.provider} needs {variable}")
    if settings.provider == "cloudflare" and not settings.base_url:
        # Cloudflare purges full URLs, so the public host must be known.
        raise ConfigurationError("SLUICE_CDN_PROVIDER=cloudflare needs SLUICE_CDN_BASE_URL")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every option of every section; raise :class:`ConfigurationError` on the
    first bad one."""
    env = _environment(env)
    data_dir = check_directory(
        env_str(env, "SLUICE_DATA_DIR", str(default_data_dir(env))), "SLUICE_DATA_DIR"
    )
    database_url = check_url(
        env_str(env, "SLUICE_DATABASE_URL", f"sqlite:///{data_dir / 'sluice.db'}"),
        "SLUICE_DATABASE_URL",
        DATABASE_SCHEMES,
    )
    if database_url.startswith("postgresql://"):
        # SQLAlchemy's bare postgresql:// means psycopg2; sluice ships psycopg 3.
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    broker_url = check_url(
        env_str(env, "SLUICE_BROKER_URL", "filesystem://"), "SLUICE_BROKER_URL", BROKER_SCHEMES
    )
    redis_raw = env.get("SLUICE_REDIS_URL", "").strip()
    redis_url = check_url(redis_raw, "SLUICE_REDIS_URL", REDIS_SCHEMES) if redis_raw else None
    result_backend = env_str(
        env, "SLUICE_RESULT_BACKEND", f"db+sqlite:///{data_dir / 'results.db'}"
    )
    if result_backend.startswith("db+"):
        check_url(result_backend[3:], "SLUICE_RESULT_BACKEND (after db+)", DATABASE_SCHEMES)
    elif result_backend.startswith(("redis://", "rediss://")):
        check_url(result_backend, "SLUICE_RESULT_BACKEND", REDIS_SCHEMES)
    elif not result_backend.startswith("rpc://"):
        raise ConfigurationError(
            f"SLUICE_RESULT_BACKEND={result_backend!r} must be a redis:// or db+<sqlalchemy url>"
        )
    max_countdown = env_number(env, "SLUICE_MAX_COUNTDOWN", 3600.0, float, 1)
    visibility_timeout = env_number(env, "SLUICE_VISIBILITY_TIMEOUT", 4 * 3600.0, float, 1)
    if visibility_timeout <= max_countdown:
        # Redis redelivers an unacknowledged message after the visibility timeout, so a task
        # delayed longer than that would run twice.
        raise ConfigurationError(
            f"SLUICE_VISIBILITY_TIMEOUT={visibility_timeout:g} must exceed "
            f"SLUICE_MAX_COUNTDOWN={max_countdown:g}"
        )
    cdn_compression_enabled = env_flag(env, "CDN_COMPRESSION_ENABLED", True)
    prices = {**DEFAULT_PRICES, **load_cache_options(env).get("prices", {})}
    ai_model_default = "sluice-local-1"
    provider = env_choice(env, "SLUICE_AI_PROVIDER", "local", AI_PROVIDERS)
    if provider == "openai":
        ai_model_default = "gpt-4o-mini"
    return Settings(
        data_dir=data_dir,
        broker_url=broker_url,
        result_backend=result_backend,
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=env_str(env, "SLUICE_KEY_PREFIX", "sluice:"),
        codec=env_choice(env, "SLUICE_CODEC", "msgpack", CODECS),
        compress_min_bytes=env_number(env, "SLUICE_COMPRESS_MIN_BYTES", 1024, int, 0),
        ai_provider=provider,
        ai_model=env_str(env, "SLUICE_AI_MODEL", ai_model_default),
        ai_base_url=check_url(
            env_str(env, "SLUICE_AI_BASE_URL", "https://api.openai.com/v1"),
            "SLUICE_AI_BASE_URL",
            {"http", "https"},
        ),
        ai_api_key=env.get("SLUICE_AI_API_KEY") or env.get("OPENAI_API_KEY") or None,
        ai_embedding_model=env_str(env, "SLUICE_AI_EMBEDDING_MODEL", "text-embedding-3-small"),
        ai_timeout=env_number(env, "SLUICE_AI_TIMEOUT", 60.0, float, 0.001),
        ai_max_retries=env_number(env, "SLUICE_AI_MAX_RETRIES", 4, int, 0),
        ai_limits=parse_ai_limits(env.get("SLUICE_AI_LIMITS", ""), prices),
        ai_prices=tuple(prices.items()),
        ai_limit_window=env_number(env, "SLUICE_AI_LIMIT_WINDOW", 60.0, float, 0.1),
        max_file_bytes=env_number(env, "SLUICE_MAX_FILE_BYTES", 1_048_576, int, 1),
        worker_concurrency=env_number(env, "SLUICE_WORKER_CONCURRENCY", 2, int, 1),
        task_timeout=env_number(env, "SLUICE_TASK_TIMEOUT", 600.0, float, 1),
        retention_days=env_number(env, "SLUICE_RETENTION_DAYS", 30.0, float, 0.001),
        handler_modules=_handler_modules(env),
        max_payload_bytes=env_number(env, "SLUICE_MAX_PAYLOAD_BYTES", 1_048_576, int, 1),
        max_countdown=max_countdown,
        visibility_timeout=visibility_timeout,
        batch_flush_every=env_number(env, "SLUICE_BATCH_FLUSH_EVERY", 100, int, 1),
        batch_flush_interval=env_number(env, "SLUICE_BATCH_FLUSH_INTERVAL", 1.0, float, 0.01),
        watchdog_interval=_watchdog_interval(env),
        log_level=env_choice(
            env, "SLUICE_LOG_LEVEL", "info", {"debug", "info", "warning", "error"}
        ).upper(),
        cache_enabled=env_flag(env, "CACHE_ENABLED", True),
        async_processing_enabled=env_flag(env, "ASYNC_PROCESSING_ENABLED", True),
        query_cache_enabled=env_flag(env, "QUERY_CACHE_ENABLED", True),
        cdn_compression_enabled=cdn_compression_enabled,
        serve_host=env_str(env, "SLUICE_SERVE_HOST", "127.0.0.1"),
        serve_port=_port(env, "SLUICE_SERVE_PORT", 8000),
        log_format=load_log_format(env),
        rate_limits=load_rate_limits(env),
        cache_options=MappingProxyType(load_cache_options(env)),
        cdn=load_cdn_settings(env, cdn_compression_enabled),
    )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = env_number(env, name, default, int, 0)
    if port > 65535:
        raise ConfigurationError(f"{name}={env[name]!r} is above the highest port, 65535")
    return port


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _handler_modules(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("SLUICE_HANDLER_MODULES", "")
    modules = tuple(m.strip() for m in raw.split(",") if m.strip())
    for module in modules:
        if not _MODULE_NAME.fullmatch(module):
            raise ConfigurationError(
                f"SLUICE_HANDLER_MODULES={raw!r}: {module!r} is not a Python module name; "
                "list importable modules separated by commas, e.g. myapp.handlers"
            )
    return modules


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once from ``os.environ``."""
    return load_settings()
