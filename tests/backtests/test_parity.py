"""One engine: a backtest and a paper replay of the same candles make the same trades."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.conf import settings

from backtests.engine import Sizing
from backtests.models import Backtest, BacktestTrade
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from core.time_utils import ms_to_datetime, resolution_to_timedelta
from execution.services import execution_run
from strategies.models import StrategyExecution
from tests.factories import StrategyFactory, load_candles, subscribe
from trades.models import Order, Trade

pytestmark = pytest.mark.django_db

STEP = resolution_to_timedelta("5m")
# Trades often, both ways, with stops and targets close enough to be hit inside candles.
ACTIVE = """
LOOKBACK = 12

def generate_signal(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(3).mean(), close.rolling(8).mean()
    if slow.isna().iloc[-2]:
        return None
    price = float(close.iloc[-1])
    if fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]:
        return {"signal": "LONG", "stopLoss": price * 0.997, "takeProfit": price * 1.004,
                "metadata": {"fast": float(fast.iloc[-1])}}
    if fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]:
        return {"signal": "SHORT", "stopLoss": price * 1.003, "takeProfit": price * 0.996}
    if len(close) % 7 == 0:
        return {"signal": "EXIT_LONG"}
    return None
"""
CANDLES = 220


@pytest.fixture
def eth_btc():
    path = settings.MARKET_DATA_DIR / "candles" / "ETH_BTC-5m.json"
    rows = json.loads(path.read_text())[:CANDLES]
    load_candles(rows=rows)
    return rows


def _paper_replay(strategy, rows):
    for row in rows:
        execution_run(
            strategy_id=strategy.pk,
            interval_start=ms_to_datetime(int(row[0])),
            trigger=StrategyExecution.Trigger.REPLAY,
            inline_fanout=True,
        )


# Every figure of a trade both records hold, compared as one row per trade.
FIGURES = (
    "side",
    "quantity",
    "entry_time",
    "entry_price",
    "entry_fee",
    "stop_loss",
    "take_profit",
    "exit_time",
    "exit_price",
    "exit_fee",
    "pnl",
)


def _paper_trades(subscription):
    trades = Trade.objects.filter(
        subscription=subscription, status__in=[Trade.Status.OPEN, Trade.Status.CLOSED]
    ).order_by("entry_time")
    return [
        (
            *(getattr(t, name) for name in FIGURES),
            (t.metadata or {}).get("exit_reason", "") if t.exit_time else "",
        )
        for t in trades
    ]


def _backtest_trades(backtest):
    trades = BacktestTrade.objects.filter(backtest=backtest).order_by("entry_time")
    return [(*(getattr(t, name) for name in FIGURES), t.exit_reason) for t in trades]


def test_a_backtest_makes_the_trades_a_paper_replay_of_the_same_candles_makes(eth_btc):
    # given a strategy with one paper subscriber, replayed close by close through the pipeline
    strategy = StrategyFactory(code=ACTIVE, lookback=12)
    subscription = subscribe(strategy, capital="2", risk="0.02", leverage="2")
    _paper_replay(strategy, eth_btc)
    paper = _paper_trades(subscription)
    platform = _platform_counts()

    # when the same strategy is backtested over the same candles, with the same sizing and costs
    backtest = backtest_create(
        owner=strategy.owner,
        subject=Subject(strategy=strategy),
        period=Period(),
        sizing=Sizing(Decimal("2"), Decimal("0.02"), Decimal("2")),
        costs=Costs(),
    )
    backtest = backtest_run(backtest_id=backtest.pk)

    # then trade for trade: sides, sizes, times, fill prices, fees, PnL and exit reasons
    assert backtest.status == Backtest.Status.DONE, backtest.error
    assert len(paper) >= 6, "the strategy should trade both ways and hit stops"
    assert {row[-1] for row in paper} >= {"stop loss", "reversed by an opposite signal"}
    assert _backtest_trades(backtest) == paper
    # and the replay's warm-up closes are the backtest's warm-up: never traded
    skipped = StrategyExecution.objects.filter(strategy=strategy, error__startswith="warming up")
    assert skipped.count() == strategy.lookback - 1 == len(eth_btc) - backtest.candles_done
    # and the backtest left the platform's records alone
    assert _platform_counts() == platform


def _platform_counts():
    return (Trade.objects.count(), Order.objects.count(), StrategyExecution.objects.count())
