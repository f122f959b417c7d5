"""What AI models cost: USD per 1,000 prompt and completion tokens, by model name.

The one price table, read by the AI result cache (the cost a hit saved) and by admission control
(the spending budget). ``SLUICE_CACHE_PRICES`` (JSON, parsed in :mod:`sluice.settings`) adds models
or overrides these prices.
"""

from __future__ import annotations

#: USD per 1,000 (prompt, completion) tokens.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4": (0.03, 0.06),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "text-embedding-3-small": (0.00002, 0.0),
    "text-embedding-3-large": (0.00013, 0.0),
    "sluice-local-1": (0.0, 0.0),
}


def cost_usd(price: tuple[float, float], prompt_tokens: float, completion_tokens: float) -> float:
    """USD of a call with these token counts at ``price`` (per 1K prompt, completion tokens)."""
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1000
