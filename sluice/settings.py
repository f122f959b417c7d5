"""One frozen :class:`Settings` object read from the environment.

Every option is a ``SLUICE_*`` variable, except the guide's rollback flags, which keep their own names
(``CACHE_ENABLED``, ``ASYNC_PROCESSING_ENABLED``, ``QUERY_CACHE_ENABLED``, ``CDN_COMPRESSION_ENABLED``).
With nothing set, everything lives under one data directory and no service is needed: the broker is
kombu's filesystem transport, results and the database are SQLite files, the shared store is diskcache.
Values are validated when they are read, so a typo fails at start-up with the variable's name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from sluice.errors import ConfigurationError
from sluice.pricing import DEFAULT_PRICES, price_table

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
    log_level: str = "INFO"
    cache_enabled: bool = True
    async_processing_enabled: bool = True
    query_cache_enabled: bool = True
    cdn_compression_enabled: bool = True

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
    except ValueError as exc:
        raise ConfigurationError(f"{name}={value!r} is not a valid URL: {exc}") from None
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


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and ``sluice config``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sluice"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every option; raise :class:`ConfigurationError` on the first bad one."""
    env = os.environ if env is None else env
    data_dir = Path(env_str(env, "SLUICE_DATA_DIR", str(default_data_dir()))).expanduser().resolve()
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
    if not result_backend.startswith(("db+", "redis://", "rediss://", "rpc://")):
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
    prices = price_table(env)
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
        handler_modules=tuple(
            m.strip() for m in env.get("SLUICE_HANDLER_MODULES", "").split(",") if m.strip()
        ),
        max_payload_bytes=env_number(env, "SLUICE_MAX_PAYLOAD_BYTES", 1_048_576, int, 1),
        max_countdown=max_countdown,
        visibility_timeout=visibility_timeout,
        batch_flush_every=env_number(env, "SLUICE_BATCH_FLUSH_EVERY", 100, int, 1),
        batch_flush_interval=env_number(env, "SLUICE_BATCH_FLUSH_INTERVAL", 1.0, float, 0.01),
        log_level=env_choice(
            env, "SLUICE_LOG_LEVEL", "info", {"debug", "info", "warning", "error"}
        ).upper(),
        cache_enabled=env_flag(env, "CACHE_ENABLED", True),
        async_processing_enabled=env_flag(env, "ASYNC_PROCESSING_ENABLED", True),
        query_cache_enabled=env_flag(env, "QUERY_CACHE_ENABLED", True),
        cdn_compression_enabled=env_flag(env, "CDN_COMPRESSION_ENABLED", True),
    )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once from ``os.environ``."""
    return load_settings()
