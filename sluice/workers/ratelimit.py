"""RateLimiter: one token bucket in the shared store, the same limit for every process.

On Redis the bucket is refilled and taken by one Lua script using the server's clock, so any number
of workers on any number of hosts share it exactly (celery's own ``rate_limit`` is per worker).
Limits are named so handlers can refer to them: :func:`define_rate_limit`, or
``SLUICE_RATE_LIMITS="openai=100:200,embeddings=50:100"`` (rate per second : burst).
"""

from __future__ import annotations

import threading

from sluice.errors import ConfigurationError, InvalidInput
from sluice.settings import get_settings
from sluice.store import Store, TokenGrant, get_store


class RateLimiter:
    """The guide's token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        name: str = "default",
        store: Store | None = None,
    ) -> None:
        if not isinstance(rate, int | float) or rate <= 0:
            raise InvalidInput(f"rate must be a positive number of tokens per second, got {rate!r}")
        burst = rate if burst is None else burst
        if not isinstance(burst, int | float) or burst < 1:
            raise InvalidInput(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.name = name
        self._store = store
        self.last_wait = 0.0

    @property
    def store(self) -> Store:
        return self._store or get_store()

    def take(self, tokens: float = 1.0) -> TokenGrant:
        """Take ``tokens`` now if available; the grant says how long to wait otherwise."""
        grant = self.store.take_token(f"ratelimit:{self.name}", self.rate, self.burst, tokens)
        self.last_wait = grant.wait_seconds
        return grant

    async def acquire(self, tokens: float = 1.0) -> bool:
        """True if a token was taken, False at once if none is left (see :meth:`wait_time`)."""
        return self.take(tokens).granted

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Synchronous :meth:`acquire`."""
        return self.take(tokens).granted

    def wait_time(self) -> float:
        """Seconds until the tokens refused by the last call will be available (0 if granted)."""
        return self.last_wait

    def __repr__(self) -> str:
        return f"RateLimiter(name={self.name!r}, rate={self.rate}, burst={self.burst})"


_limits: dict[str, RateLimiter] = {}
_limits_lock = threading.Lock()
_env_loaded = False


def define_rate_limit(name: str, rate: float, burst: float | None = None) -> RateLimiter:
    """Define (or redefine) the named limit handlers refer to by ``rate_limit = name``."""
    if not name:
        raise InvalidInput("a rate limit needs a name")
    limiter = RateLimiter(rate, burst, name=name)
    with _limits_lock:
        _limits[name] = limiter
    return limiter


def get_rate_limit(name: str) -> RateLimiter:
    """The named limit, from :func:`define_rate_limit` or ``SLUICE_RATE_LIMITS``."""
    global _env_loaded
    with _limits_lock:
        if not _env_loaded:  # limits defined in code take precedence over the variable
            for spec in get_settings().rate_limits:
                _limits.setdefault(spec.name, RateLimiter(spec.rate, spec.burst, spec.name))
            _env_loaded = True
        limiter = _limits.get(name)
    if limiter is None:
        raise ConfigurationError(
            f'rate limit {name!r} is not defined; set SLUICE_RATE_LIMITS="{name}=RATE:BURST" '
            "or call define_rate_limit()"
        )
    return limiter
