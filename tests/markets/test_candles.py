"""Reads of the candle store: a period's candles as strategies see them."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from markets.candles import _ohlcv, candles_between, candles_import
from markets.models import Candle

pytestmark = pytest.mark.django_db

START_MS = int(datetime(2024, 2, 29, 23, 55, tzinfo=UTC).timestamp() * 1000)
STEP_MS = 5 * 60 * 1000


def _awkward_rows(count: int) -> list[list[float]]:
    """Prices with as many digits as the store keeps, volumes with twelve decimals: rows
    whose floats a careless conversion would get one ulp off."""
    rng = random.Random(12)
    rows = []
    for i in range(count):
        close = round(rng.uniform(1e-6, 90_000), rng.choice([2, 8, 10]))
        rows.append(
            [START_MS + i * STEP_MS, close, close * 1.001, close * 0.999, close, rng.random()]
        )
    return rows


def test_candles_between_gives_the_floats_the_stored_decimals_convert_to():
    # given candles with awkward digits in the store
    candles_import(exchange="binance", symbol="ETH/BTC", resolution="5m", rows=_awkward_rows(300))
    stored = Candle.objects.filter(symbol="ETH/BTC").order_by("open_time")
    expected = _ohlcv(stored.values_list("open_time", "open", "high", "low", "close", "volume"))

    # when the period is read
    rows = candles_between(
        exchange="binance",
        symbol="ETH/BTC",
        resolution="5m",
        start=datetime(2024, 1, 1, tzinfo=UTC),
        end=datetime(2025, 1, 1, tzinfo=UTC),
        limit=1000,
    )

    # then each value is float(Decimal) of the stored one and each time its open in ms
    assert rows == expected and len(rows) == 300
    assert all(type(row[0]) is int for row in rows)
    assert all(type(value) is float for row in rows for value in row[1:])


def test_candles_between_keeps_to_the_period_and_the_limit():
    # given 300 stored candles
    candles_import(exchange="binance", symbol="ETH/BTC", resolution="5m", rows=_awkward_rows(300))
    start = datetime.fromtimestamp((START_MS + 10 * STEP_MS) / 1000, tz=UTC)
    end = datetime.fromtimestamp((START_MS + 20 * STEP_MS) / 1000, tz=UTC)

    # when a period of ten candles is read, and then with a limit of four
    period = candles_between(
        exchange="binance", symbol="ETH/BTC", resolution="5m", start=start, end=end, limit=100
    )
    limited = candles_between(
        exchange="binance", symbol="ETH/BTC", resolution="5m", start=start, end=end, limit=4
    )

    # then the candles that opened at or after the start and closed by the end, oldest first
    assert [row[0] for row in period] == [START_MS + i * STEP_MS for i in range(10, 20)]
    assert limited == period[:4]
