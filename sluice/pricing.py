"""What AI models cost: USD per 1,000 prompt and completion tokens, by model name.

The one price table, read by the AI result cache (the cost a hit saved) and by admission control
(the spending budget). ``SLUICE_CACHE_PRICES`` (JSON) adds models or overrides these prices.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sluice.errors import ConfigurationError

#: USD per 1,000 (prompt, completion) tokens.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4": (0.03, 0.06),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "text-embedding-3-small": (0.00002, 0.0),
    "text-embedding-3-large": (0.00013, 0.0),
    "sluice-local-1": (0.0, 0.0),
}


def parse_prices(raw: str) -> dict[str, tuple[float, float]]:
    """Prices from ``SLUICE_CACHE_PRICES`` JSON; raise ConfigurationError on anything else."""
    try:
        data = json.loads(raw)
        prices = {str(m): (float(p[0]), float(p[1])) for m, p in data.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        prices = None
    if prices is None or any(v < 0 for pair in prices.values() for v in pair):
        raise ConfigurationError(
            f"SLUICE_CACHE_PRICES={raw!r} must be JSON like "
            '{"gpt-4o": [0.0025, 0.01]} (USD per 1K prompt and completion tokens, >= 0)'
        )
    return prices


def price_table(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """The default prices overridden by ``SLUICE_CACHE_PRICES`` in ``env``."""
    raw = env.get("SLUICE_CACHE_PRICES", "").strip()
    return {**DEFAULT_PRICES, **(parse_prices(raw) if raw else {})}


def cost_usd(price: tuple[float, float], prompt_tokens: float, completion_tokens: float) -> float:
    """USD of a call with these token counts at ``price`` (per 1K prompt, completion tokens)."""
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1000
