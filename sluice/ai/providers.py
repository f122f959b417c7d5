"""Building the provider the settings select, under cluster-wide admission control."""

from __future__ import annotations

import functools
from collections.abc import Callable

from sluice.ai.admission import STATS_KEY, Admission
from sluice.ai.base import AIProvider
from sluice.ai.local import LocalProvider
from sluice.errors import ConfigurationError
from sluice.settings import Settings, get_settings
from sluice.store import BufferedCounters, Store, get_store


def get_provider(settings: Settings | None = None) -> AIProvider:
    """The provider ``settings`` (default: the process settings) select.

    Raises :class:`ConfigurationError` when the OpenAI provider is selected without an API key.
    """
    settings = settings or get_settings()
    if settings.ai_provider == "local":
        return LocalProvider(model=settings.ai_model)
    if settings.ai_provider == "openai":
        if not settings.ai_api_key:
            raise ConfigurationError(
                "SLUICE_AI_PROVIDER=openai needs SLUICE_AI_API_KEY (or OPENAI_API_KEY)"
            )
        from sluice.ai.openai import OpenAIProvider

        return OpenAIProvider(
            base_url=settings.ai_base_url,
            api_key=settings.ai_api_key,
            model=settings.ai_model,
            embedding_model=settings.ai_embedding_model,
            timeout=settings.ai_timeout,
            max_retries=settings.ai_max_retries,
            admission=admission_for("openai", settings),
        )
    raise ConfigurationError(
        f"SLUICE_AI_PROVIDER={settings.ai_provider!r} must be one of: local, openai"
    )


def admission_for(provider: str, settings: Settings | None = None) -> Admission:
    """Admission control of ``provider`` with the limits and prices of ``settings``.

    A reservation's lease outlasts the longest call the provider settings allow (every attempt
    timing out), so only a dead worker's reservation ever lapses.
    """
    settings = settings or get_settings()
    return Admission(
        provider,
        settings.ai_limits,
        settings.prices,
        store=_store_of(settings),
        lease=settings.ai_timeout * (settings.ai_max_retries + 1) + 60.0,
        window=settings.ai_limit_window,
        stats=_admission_stats(settings),
    )


def _store_of(settings: Settings) -> Callable[[], Store]:
    return lambda: get_store(settings)


@functools.cache
def _admission_stats(settings: Settings) -> BufferedCounters:
    """One counter buffer per process and settings: providers are built per task, counts are not
    dropped with them."""
    return BufferedCounters.in_hash(_store_of(settings), STATS_KEY)
