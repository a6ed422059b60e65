"""Candles for the demo and benchmarks: local files, else ccxt when online, else synthetic."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from core.time_utils import datetime_to_ms, resolution_to_minutes
from markets.candles import candles_import, candles_import_file

logger = logging.getLogger(__name__)

SYNTHETIC_START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LoadedMarket:
    source: str  # file | ccxt | synthetic
    added: int


def market_file(*, symbol: str, resolution: str) -> Path:
    return (
        Path(settings.MARKET_DATA_DIR) / "candles" / f"{symbol.replace('/', '_')}-{resolution}.json"
    )


def _fetch_with_ccxt(*, exchange: str, symbol: str, resolution: str, count: int) -> list[list]:
    import ccxt

    client = getattr(ccxt, exchange)({"timeout": 10_000, "enableRateLimit": True})
    return client.fetch_ohlcv(symbol, timeframe=resolution, limit=count)


def synthetic_candles(
    *, resolution: str, count: int, seed: int = 42, price: float = 0.05
) -> list[list]:
    """A seeded random walk with regime changes, so crossovers happen as on a real market."""
    rng = random.Random(seed)
    step_ms = resolution_to_minutes(resolution) * 60_000
    start, rows, drift = datetime_to_ms(SYNTHETIC_START), [], 0.0
    for i in range(count):
        if i % 50 == 0:
            drift = rng.uniform(-0.002, 0.002)
        close = max(price * (1 + drift + rng.gauss(0, 0.004)), 1e-8)
        high, low = max(price, close) * 1.001, min(price, close) * 0.999
        rows.append([start + i * step_ms, price, high, low, close, rng.uniform(10, 100)])
        price = close
    return rows


def market_data_load(*, exchange: str, symbol: str, resolution: str, count: int) -> LoadedMarket:
    market = {"exchange": exchange, "symbol": symbol, "resolution": resolution}
    path = market_file(symbol=symbol, resolution=resolution)
    if path.is_file():
        return LoadedMarket("file", candles_import_file(path=path, **market))
    try:
        rows = _fetch_with_ccxt(
            exchange=exchange, symbol=symbol, resolution=resolution, count=count
        )
        if rows:
            return LoadedMarket("ccxt", candles_import(rows=rows, **market))
    except Exception as exc:  # offline or the exchange refused: fall back to synthetic data
        logger.info("ccxt fetch unavailable (%s); using a synthetic market", type(exc).__name__)
    rows = synthetic_candles(resolution=resolution, count=count)
    return LoadedMarket("synthetic", candles_import(rows=rows, **market))
