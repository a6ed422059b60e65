"""The divergence report's figures are the ones computed by hand from the simulator's fills."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from core.time_utils import datetime_to_ms
from execution.services import execution_run
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from tests.api.helpers import client_for
from tests.factories import StrategyFactory, load_candles
from tests.trades.conftest import START, STEP
from tests.trades.live import live_trader

pytestmark = pytest.mark.django_db(transaction=True)

PRICES = [0.05] * 10 + [0.0501, 0.0502, 0.05]


def _market() -> list[datetime]:
    rows = [
        [datetime_to_ms(START + STEP * i), p, p * 1.001, p * 0.999, p, 10.0]
        for i, p in enumerate(PRICES)
    ]
    load_candles(rows=rows)
    return [START + STEP * (i + 1) for i in range(len(PRICES))]


def _run(sim, strategy, *, signal_close: datetime, market_at: datetime) -> StrategyExecution:
    """The strategy runs on the candle closing at ``signal_close``; the exchange trades at the
    candle closing at ``market_at`` when the order reaches it."""
    sim.clock(market_at)
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=signal_close - STEP,
        trigger="replay",
        inline_fanout=True,
    )
    return StrategyExecution.objects.get(pk=outcome.execution_id)


def _by_hand(execution: StrategyExecution, order: dict, *, buy: bool) -> tuple[Decimal, float]:
    signal = Decimal(execution.signal["price"])
    fill = Decimal(order["quote"]) / Decimal(order["executed"])
    moved = fill - signal if buy else signal - fill
    slippage = (moved / signal * 10_000).quantize(Decimal("0.01"))
    latency = order["update_ms"] - execution.finished_at.timestamp() * 1000
    return slippage, latency


def test_slippage_and_latency_equal_the_figures_computed_from_the_simulators_fills(sim):
    # given a live follower, a LONG signal at 0.05 filled while the market is at 0.0501, and
    # an EXIT_LONG signal at 0.0502 filled while the market is back at 0.05
    closes = _market()
    sim.refresh()
    strategy = StrategyFactory(settings={"signal": "LONG"}, is_public=True)
    trader = live_trader(sim, strategy)
    entry = _run(sim, strategy, signal_close=closes[9], market_at=closes[10])
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    exit_ = _run(sim, strategy, signal_close=closes[11], market_at=closes[12])
    bought, sold = sorted(
        (o for o in sim.orders() if o["api_key"] == trader.api_key), key=lambda o: o["order_id"]
    )
    # when the follower reads the divergence report
    api = client_for(trader.subscription.user)
    response = api.get(f"/api/strategies/subscriptions/{trader.subscription.pk}/divergence")
    # then each fill's slippage (against the follower) and latency are the hand-made ones
    assert response.status_code == 200, response.content
    report = response.json()
    entry_fill, exit_fill = report["fills"]
    slip_in, latency_in = _by_hand(entry, bought, buy=True)
    slip_out, latency_out = _by_hand(exit_, sold, buy=False)
    assert (entry_fill["leg"], entry_fill["side"]) == ("entry", "buy")
    assert Decimal(entry_fill["slippage_bps"]) == slip_in == Decimal("20.00")
    assert Decimal(exit_fill["slippage_bps"]) == slip_out == Decimal("39.84")
    assert entry_fill["latency_ms"] == pytest.approx(latency_in, abs=1)
    assert exit_fill["latency_ms"] == pytest.approx(latency_out, abs=1)
    assert report["summary"]["fills"] == 2
    average = ((slip_in + slip_out) / 2).quantize(Decimal("0.01"))
    assert Decimal(report["summary"]["slippage_bps_avg"]) == average
    # and the subscription's stats and the strategy's (over its one follower) carry them
    stats = api.get(f"/api/strategies/subscriptions/{trader.subscription.pk}/stats").json()
    assert Decimal(stats["divergence"]["slippage_bps_avg"]) == average
    response = api.get(f"/api/strategies/{strategy.pk}/stats")
    assert response.status_code == 200, response.content
    followers = response.json()["followers_divergence"]
    assert followers["followers_with_fills"] == 1
    assert Decimal(followers["slippage_bps_avg"]) == average


def test_signals_the_follower_did_not_get_are_listed_with_their_reason(sim):
    # given a follower without the funds for the entry
    closes = _market()
    sim.refresh()
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy, balances={"BTC": "0.0001"})
    _run(sim, strategy, signal_close=closes[9], market_at=closes[9])
    # when the follower reads the report
    api = client_for(trader.subscription.user)
    report = api.get(f"/api/strategies/subscriptions/{trader.subscription.pk}/divergence").json()
    # then the signal it did not get is there, with why
    (missed,) = report["missed_signals"]
    assert missed["status"] == "rejected" and "insufficient" in missed["reason"].lower()
    assert report["summary"]["signals_missed"] == 1 and report["fills"] == []
