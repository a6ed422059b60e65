from __future__ import annotations

import pytest

from core.time_utils import datetime_to_ms
from markets.models import Candle
from tests.factories import load_candles
from tooling.simulator.client import SimulatorClient


class ExchangeHistory:
    """The exchange simulator's candle history. The simulator serves what it read from the
    candle store, so a test publishes rows there, has the simulator read them, then empties
    the store: what the store holds afterwards came over ccxt."""

    def __init__(self, sim: SimulatorClient) -> None:
        self.sim = sim

    def publish(self, rows: list[list]) -> list[list]:
        """The exchange's candles, as it serves them (the store's digits)."""
        load_candles(rows=rows)
        self.sim.refresh()
        published = self.store()
        Candle.objects.all().delete()
        return published

    @staticmethod
    def store() -> list[list]:
        """The candle store's rows, oldest first, as ccxt OHLCV rows."""
        return [
            [datetime_to_ms(t), float(o), float(h), float(lo), float(c), float(v)]
            for t, o, h, lo, c, v in Candle.objects.order_by("open_time").values_list(
                "open_time", "open", "high", "low", "close", "volume"
            )
        ]


@pytest.fixture
def exchange_history(simulator_process, settings):
    """A simulator with no candles, and this process's ccxt pointed at it."""
    settings.EXCHANGE_URL_OVERRIDES = {"binance": simulator_process.url}
    sim = SimulatorClient(simulator_process.url)
    sim.reset()
    yield ExchangeHistory(sim)
    sim.reset()
