"""AI providers behind one protocol: the offline :class:`LocalProvider` and :class:`OpenAIProvider`.

``get_provider()`` builds the one the settings select (``SLUICE_AI_PROVIDER``, default ``local``);
a hosted provider comes under cluster-wide :class:`Admission` control (``SLUICE_AI_LIMITS``, and
the pause on 429).

Names load on first use (PEP 562): ``sluice analyze`` checks ``--rules`` and ``--fail-on`` against
:mod:`sluice.ai.rules` and :mod:`sluice.ai.base` before it starts its worker, without the admission
layer, the store and the providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.lazy import lazy_exports

if TYPE_CHECKING:
    from sluice.ai.admission import Admission, Ticket, count_tokens, request_tokens
    from sluice.ai.base import SEVERITIES, AIProvider, AnalysisResult, Finding, Usage
    from sluice.ai.languages import LANGUAGES, detect_language, normalize_language
    from sluice.ai.local import LocalProvider
    from sluice.ai.openai import OpenAIProvider
    from sluice.ai.providers import admission_for, get_provider
    from sluice.ai.rules import RULES

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
    # admission control
    "Admission",
    "Ticket",
    "admission_for",
    "count_tokens",
    "request_tokens",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "AIProvider": "base",
        "AnalysisResult": "base",
        "Finding": "base",
        "Usage": "base",
        "SEVERITIES": "base",
        "LocalProvider": "local",
        "OpenAIProvider": "openai",
        "get_provider": "providers",
        "admission_for": "providers",
        "LANGUAGES": "languages",
        "detect_language": "languages",
        "normalize_language": "languages",
        "RULES": "rules",
        "Admission": "admission",
        "Ticket": "admission",
        "count_tokens": "admission",
        "request_tokens": "admission",
    },
)
