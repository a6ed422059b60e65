"""Small shared typing helpers."""

from __future__ import annotations

from typing import TypedDict


class DecimalSpec(TypedDict):
    """``max_digits``/``decimal_places`` of a DecimalField, typed so ``**spec`` type-checks."""

    max_digits: int
    decimal_places: int


# Every price column (candles, signals, trades, orders): wide enough for any market's quotes.
PRICE: DecimalSpec = {"max_digits": 30, "decimal_places": 12}
