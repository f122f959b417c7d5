"""AI providers behind one protocol: the offline :class:`LocalProvider` and :class:`OpenAIProvider`.

``get_provider()`` builds the one the settings select (``SLUICE_AI_PROVIDER``, default ``local``).
"""

from __future__ import annotations

from sluice.ai.base import SEVERITIES, AIProvider, AnalysisResult, Finding, Usage
from sluice.ai.languages import LANGUAGES, detect_language, normalize_language
from sluice.ai.local import LocalProvider
from sluice.ai.openai import OpenAIProvider
from sluice.ai.rules import RULES
from sluice.errors import ConfigurationError
from sluice.settings import Settings, get_settings

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # providers
    "AIProvider",
    "LocalProvider",
    "OpenAIProvider",
    "get_provider",
    # what they return
    "AnalysisResult",
    "Finding",
    "Usage",
    "SEVERITIES",
    # languages and rules
    "LANGUAGES",
    "RULES",
    "detect_language",
    "normalize_language",
]


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
        return OpenAIProvider(
            base_url=settings.ai_base_url,
            api_key=settings.ai_api_key,
            model=settings.ai_model,
            embedding_model=settings.ai_embedding_model,
            timeout=settings.ai_timeout,
            max_retries=settings.ai_max_retries,
        )
    raise ConfigurationError(
        f"SLUICE_AI_PROVIDER={settings.ai_provider!r} must be one of: local, openai"
    )
