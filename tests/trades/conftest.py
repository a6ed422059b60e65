from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.time_utils import datetime_to_ms
from tests.factories import flat_candles, load_candles
from tests.trades.live import LIVE_ENV, LIVE_QUEUE, Sim

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture
def sim(simulator_process, settings):
    """A clean simulator, and this process pointed at it with short exchange timeouts."""
    settings.EXCHANGE_URL_OVERRIDES = {"binance": simulator_process.url}
    settings.EXCHANGE_TIMEOUT_MS = int(LIVE_ENV["EXCHANGE_TIMEOUT_MS"])
    settings.EXCHANGE_RETRY_BACKOFF_S = float(LIVE_ENV["EXCHANGE_RETRY_BACKOFF_S"])
    settings.EXCHANGE_ORDER_RETRIES = int(LIVE_ENV["EXCHANGE_ORDER_RETRIES"])
    settings.ORDER_SEND_LEASE_S = float(LIVE_ENV["ORDER_SEND_LEASE_S"])
    settings.FANOUT_QUEUE = LIVE_QUEUE
    client = Sim(simulator_process.url)
    client.reset()
    yield client
    client.reset()


@pytest.fixture
def market(sim):
    """30 ETH/BTC 5m candles in the store and on the simulator; returns their close times."""
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=30))
    sim.refresh()
    return [START + STEP * (i + 1) for i in range(30)]
