"""Plain data classes for inventory items (this module has no problems to report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Item:
    id: int
    name: str
    price: Decimal
    category: str
    tags: tuple[str, ...] = field(default_factory=tuple)

    def with_tag(self, tag: str) -> Item:
        if tag in self.tags:
            return self
        return Item(self.id, self.name, self.price, self.category, (*self.tags, tag))

    def discounted(self, percent: Decimal) -> Decimal:
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, got {percent}")
        return (self.price * (100 - percent) / 100).quantize(Decimal("0.01"))
