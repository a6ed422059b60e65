"""Sample candles for dry runs and benchmarks when the candle store has none (no Django)."""

from __future__ import annotations

import math
import random


def synthetic_candles(
    *, count: int, step_ms: int, end_ms: int, start_price: float = 100.0, seed: int = 7
) -> list[list[float]]:
    """``count`` ccxt OHLCV rows, oldest first, the last one opening at ``end_ms - step_ms``:
    a seeded random walk with a slow wave, so that indicators cross now and then and every
    price is positive and finite."""
    rng = random.Random(seed)
    rows: list[list[float]] = []
    price = start_price
    first_open = end_ms - count * step_ms
    for i in range(count):
        wave = 0.002 * math.sin(i / 15)
        close = max(price * (1 + wave + rng.gauss(0, 0.004)), 1e-9)
        high = max(price, close) * (1 + abs(rng.gauss(0, 0.002)))
        low = min(price, close) * (1 - abs(rng.gauss(0, 0.002)))
        rows.append([first_open + i * step_ms, price, high, low, close, 10 + 90 * rng.random()])
        price = close
    return rows
