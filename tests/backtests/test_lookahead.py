"""The vectorised path: one generate_signals call, checked for look-ahead bias."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command

from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from tests.factories import UserFactory, load_candles

pytestmark = pytest.mark.django_db

HONEST = """
LOOKBACK = 31

def _signal(up, down, price):
    if up:
        return {"signal": "LONG", "stopLoss": price * 0.99, "takeProfit": price * 1.02}
    return {"signal": "EXIT_LONG"} if down else None

def generate_signal(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    if slow.isna().iloc[-2]:
        return None
    up = fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]
    down = fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]
    return _signal(up, down, float(close.iloc[-1]))

def generate_signals(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    up = ((fast.shift(1) <= slow.shift(1)) & (fast > slow)).tolist()
    down = ((fast.shift(1) >= slow.shift(1)) & (fast < slow)).tolist()
    return [_signal(u, d, p) for u, d, p in zip(up, down, close.tolist())]
"""
# The same, but the vectorised form decides on the next candle's close: shift(-1).
PEEKS = HONEST.replace(
    'def generate_signals(candles, settings):\n    close = candles["close"]',
    'def generate_signals(candles, settings):\n    close = candles["close"].shift(-1).ffill()',
)


@pytest.fixture
def eth_btc():
    rows = json.loads((settings.MARKET_DATA_DIR / "candles" / "ETH_BTC-5m.json").read_text())
    load_candles(rows=rows[:600])


def _backtest(code, method):
    backtest = backtest_create(
        owner=UserFactory(),
        subject=Subject(code=code, exchange="binance", symbol="ETH/BTC", resolution="5m"),
        period=Period(),
        sizing=Sizing(Decimal("1"), Decimal("0.01"), Decimal("1")),
        costs=Costs(),
        method=method,
    )
    return backtest_run(backtest_id=backtest.pk)


def _trades(backtest):
    return list(
        backtest.trades.values_list("side", "entry_time", "entry_price", "exit_time", "pnl")
    )


def test_an_honest_vectorised_strategy_passes_the_check_and_trades_as_per_candle(eth_btc):
    # given a strategy whose two forms agree
    # when it is backtested both ways
    vectorised = _backtest(HONEST, Backtest.Method.VECTORISED)
    per_candle = _backtest(HONEST, Backtest.Method.PER_CANDLE)

    # then the check found nothing, and the trades are the same
    assert vectorised.status == Backtest.Status.DONE, vectorised.error
    assert vectorised.lookahead["checked"] > 10
    assert vectorised.lookahead["disagreements"] == []
    assert not any("look-ahead" in w for w in vectorised.metrics["warnings"])
    assert len(_trades(per_candle)) >= 3
    assert _trades(vectorised) == _trades(per_candle)


def test_a_strategy_that_peeks_one_candle_ahead_is_reported(eth_btc):
    # given a vectorised form that reads the next close (shift(-1))
    # when it is backtested vectorised
    backtest = _backtest(PEEKS, Backtest.Method.VECTORISED)

    # then the disagreements are reported with the candle and both signals, and a warning
    assert backtest.status == Backtest.Status.DONE, backtest.error
    found = backtest.lookahead["disagreements"]
    assert found, backtest.lookahead
    assert {"time_ms", "generate_signals", "generate_signal"} <= set(found[0])
    assert found[0]["generate_signals"] != found[0]["generate_signal"]
    assert any(w.startswith("look-ahead bias") for w in backtest.metrics["warnings"])


def test_generate_signal_failing_during_the_check_fails_the_backtest_with_nothing_recorded(
    eth_btc,
):
    # given a generate_signal that raises on history past the middle of the candles (the
    # check's later steps), its vectorised form honest
    rows = json.loads((settings.MARKET_DATA_DIR / "candles" / "ETH_BTC-5m.json").read_text())
    middle = int(rows[300][0])
    code = HONEST.replace(
        '    close = candles["close"]\n    fast',
        f'    if candles["timestamp"].iloc[-1].value // 10**6 >= {middle}:\n'
        '        raise ValueError("late history")\n'
        '    close = candles["close"]\n    fast',
        1,
    )
    assert code != HONEST

    # when it is backtested vectorised
    backtest = _backtest(code, Backtest.Method.VECTORISED)

    # then it failed with the strategy's error and line, and no trade or series is shown
    assert backtest.status == Backtest.Status.FAILED
    assert "ValueError: late history" in backtest.error
    assert "(line " in backtest.error
    assert not backtest.trades.exists()
    assert backtest.series == {} and backtest.metrics == {}


def test_a_vectorised_strategy_without_generate_signals_fails_clearly(eth_btc):
    # given code with generate_signal only
    code = HONEST[: HONEST.index("def generate_signals")]

    # when it is backtested vectorised
    backtest = _backtest(code, Backtest.Method.VECTORISED)

    # then the backtest failed and says what is missing
    assert backtest.status == Backtest.Status.FAILED
    assert "generate_signals" in backtest.error


def test_bench_backtest_prints_both_paths_beside_the_floor():
    # given the benchmark's market in the store (read from the shared data)
    out = io.StringIO()

    # when it runs once
    call_command("bench_backtest", "--runs", "1", stdout=out)

    # then it printed the floor, the parts and both paths with their ratio to the floor
    text = out.getvalue()
    assert "5760 candles" in text
    assert re.search(r"floor: plain loop, one process, 5711 windows: [\d.]+ s", text)
    assert re.search(r"backtest per_candle: [\d.]+ s = [\d,]+ candles/s, [\d.]+x the floor", text)
    assert re.search(r"backtest vectorised: .* look-ahead check of \d+ candles included", text)
    assert re.search(r"generate_signals alone in the sandbox .* [\d,]+ candles/s", text)
