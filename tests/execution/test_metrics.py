"""What the candle pipeline records in Prometheus at a real-time close (in process)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.metrics import metrics_registry
from core.time_utils import datetime_to_ms, round_to_interval_boundary
from execution.services import execution_run
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

STEP = timedelta(minutes=5)
MARKET = {"exchange": "binance", "resolution": "5m"}
SYMBOL = "XMR/BTC"  # no other test trades it


def _value(name: str, **labels: str) -> float:
    return metrics_registry().get_sample_value(name, labels) or 0.0


def test_a_streamed_close_records_its_latency_and_beat_finding_it_done(settings):
    # given a LONG strategy with a paper subscriber, and the candle that closed last
    # The last 5m boundary may be minutes ago: not too late to run nor to enter.
    settings.EXECUTION_MAX_DRIFT_S = settings.SIGNAL_MAX_AGE_S = 600
    close = round_to_interval_boundary(timezone.now(), "5m")
    # A market of its own: the newest close is the max over every process of the test run,
    # and workers of other tests execute ETH/BTC on replay clocks.
    rows = flat_candles(start_ms=datetime_to_ms(close - 10 * STEP), count=10)
    load_candles(symbol=SYMBOL, rows=rows)
    strategy = StrategyFactory(symbol=SYMBOL, settings={"signal": "LONG"})
    subscribe(strategy)
    names = {
        "start": ("signalfan_close_to_start_seconds_count", {**MARKET, "trigger": "stream"}),
        "order": ("signalfan_close_to_last_order_seconds_count", MARKET),
        "found": ("signalfan_beat_found_done_total", MARKET),
    }
    before = {key: _value(name, **labels) for key, (name, labels) in names.items()}

    # when the streamer's execution runs it, and beat's comes after
    ran = execution_run(
        strategy_id=strategy.pk, interval_start=close - STEP, trigger="stream", inline_fanout=True
    )
    again = execution_run(strategy_id=strategy.pk, interval_start=close - STEP, trigger="beat")

    # then close -> start and close -> last order were observed once, beat found it done,
    # and the market's newest executed close is this one
    assert (ran.outcome, again.outcome) == ("ran", "duplicate")
    after = {key: _value(name, **labels) for key, (name, labels) in names.items()}
    assert {key: after[key] - before[key] for key in names} == {"start": 1, "order": 1, "found": 1}
    last = _value("signalfan_market_last_execution_timestamp_seconds", **MARKET, symbol=SYMBOL)
    assert last == close.timestamp()
