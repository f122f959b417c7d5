"""CDN settings: :class:`CDNSettings`, read from ``SLUICE_CDN_*`` variables by :mod:`sluice.settings`.

The section is read and validated with every other setting at start-up (``get_settings().cdn``); a
bad value raises :class:`ConfigurationError` naming the variable. The rollback flag
``CDN_COMPRESSION_ENABLED`` stays in the main settings.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluice.settings import CDNSettings, get_settings
from sluice.settings import load_cdn_settings as _load_cdn_section

__all__ = [
    "CDNSettings",
    "get_cdn_settings",
    "load_cdn_settings",
]


def load_cdn_settings(env: Mapping[str, str] | None = None) -> CDNSettings:
    """Read and validate every ``SLUICE_CDN_*`` option of ``env`` (default: the environment);
    compression follows the main settings' ``CDN_COMPRESSION_ENABLED``."""
    return _load_cdn_section(env, get_settings().cdn_compression_enabled)


def get_cdn_settings() -> CDNSettings:
    """The process-wide CDN settings, read with every other setting at start-up."""
    return get_settings().cdn
