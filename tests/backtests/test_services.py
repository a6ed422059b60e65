"""Creating and running backtests: warm-up, gaps, bad input, strategies that fail."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from backtests.engine import Sizing
from backtests.models import Backtest, BacktestTrade
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from core.time_utils import ms_to_datetime
from markets.models import Candle
from tests.factories import StrategyFactory, UserFactory, flat_candles, load_candles

pytestmark = pytest.mark.django_db

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 300_000
STEP = timedelta(minutes=5)
SIZING = Sizing(Decimal("1"), Decimal("0.01"), Decimal("1"))
# Enters at every close it can and says how many candles it saw.
EVERY_CLOSE = """
LOOKBACK = 10

def generate_signal(candles, settings):
    return {"signal": "LONG", "metadata": {"rows": len(candles),
            "first": str(candles["timestamp"].iloc[0])}}
"""
RAISES_AT_30 = """
LOOKBACK = 5

def generate_signal(candles, settings):
    print("volume", candles["volume"].iloc[-1])
    if candles["volume"].iloc[-1] >= 40:
        return {"signal": "LONG"}["nope"]
    return None
"""
SLEEPS_AT_20 = """
import time
LOOKBACK = 5

def generate_signal(candles, settings):
    if candles["volume"].iloc[-1] >= 30:
        time.sleep(60)
    return None
"""


def _code_backtest(code, *, start=None, end=None, owner=None, **market):
    return backtest_create(
        owner=owner or UserFactory(),
        subject=Subject(
            code=code,
            exchange=market.get("exchange", "binance"),
            symbol=market.get("symbol", "ETH/BTC"),
            resolution=market.get("resolution", "5m"),
        ),
        period=Period(start, end),
        sizing=SIZING,
        costs=Costs(Decimal("0"), Decimal("0")),
    )


def test_the_lookback_candles_before_the_start_warm_up_and_are_never_traded():
    # given 40 candles, and a period that starts at the 21st
    rows = flat_candles(start_ms=START_MS, count=40)
    load_candles(rows=rows)
    start = ms_to_datetime(rows[20][0])

    # when a strategy that enters whenever it can is backtested
    backtest = backtest_run(backtest_id=_code_backtest(EVERY_CLOSE, start=start).pk)

    # then its first signal is at the start's close, on a full window of the 9 candles before it
    assert backtest.status == Backtest.Status.DONE, backtest.error
    first = BacktestTrade.objects.filter(backtest=backtest).first()
    assert first.entry_time == start + STEP
    assert first.metadata == {"rows": 10, "first": str(ms_to_datetime(rows[11][0]))}
    assert backtest.candles_done == backtest.candles_total == 20
    assert backtest.metrics["warnings"] == []


def test_without_earlier_candles_the_periods_first_ones_warm_up_and_it_says_so():
    # given 40 candles and a period from the first
    rows = flat_candles(start_ms=START_MS, count=40)
    load_candles(rows=rows)

    # when backtested
    backtest = backtest_run(backtest_id=_code_backtest(EVERY_CLOSE).pk)

    # then the first 9 candles only warm up, and the result says so
    assert backtest.status == Backtest.Status.DONE, backtest.error
    assert backtest.candles_done == backtest.candles_total == 31
    assert (
        BacktestTrade.objects.filter(backtest=backtest).first().entry_time
        == ms_to_datetime(rows[9][0]) + STEP
    )
    assert any("warm-up" in w for w in backtest.metrics["warnings"])


def test_a_period_with_gaps_says_where_and_trades_no_missing_close():
    # given candles with 3 missing after the 15th
    rows = flat_candles(start_ms=START_MS, count=40)
    load_candles(rows=rows[:15] + rows[18:])

    # when backtested
    backtest = backtest_run(backtest_id=_code_backtest(EVERY_CLOSE).pk)

    # then the gap is reported, and no close of it was traded
    assert backtest.status == Backtest.Status.DONE, backtest.error
    assert backtest.gaps == [
        {
            "after": ms_to_datetime(rows[15][0]).isoformat(),
            "before": ms_to_datetime(rows[18][0]).isoformat(),
            "missing": 3,
        }
    ]
    assert any(w.startswith("gaps: 3 candles") for w in backtest.metrics["warnings"])
    assert len(backtest.series["times"]) == 37 - 9


def test_a_strategy_that_raises_halfway_fails_the_backtest_with_the_candle_and_the_line():
    # given candles whose volume reaches 40 at the 31st
    rows = flat_candles(start_ms=START_MS, count=40)
    load_candles(rows=rows)

    # when a strategy that raises there is backtested
    backtest = backtest_run(backtest_id=_code_backtest(RAISES_AT_30).pk)

    # then the backtest failed with the close, the exception and its line, and shows no result
    close = (ms_to_datetime(rows[30][0]) + STEP).isoformat()
    assert backtest.status == Backtest.Status.FAILED
    assert backtest.error.startswith(f"the strategy failed at the candle closing {close}: ")
    assert "KeyError: 'nope' (line 7)" in backtest.error
    # and it kept what the strategy printed, and how far it got
    assert "volume 39.0" in backtest.logs and "volume 40.0" in backtest.logs
    assert (backtest.candles_done, backtest.candles_total) == (26, 36)
    assert (backtest.metrics, backtest.series) == ({}, {})
    assert not BacktestTrade.objects.filter(backtest=backtest).exists()


def test_a_strategy_that_hangs_fails_with_a_timeout(settings):
    # given a strategy that sleeps a minute at the 21st candle, and a 1 s timeout
    settings.STRATEGY_TIMEOUT_S = 1.0
    load_candles(rows=flat_candles(start_ms=START_MS, count=40))

    # when backtested
    backtest = backtest_run(backtest_id=_code_backtest(SLEEPS_AT_20).pk)

    # then it failed on the timeout, soon
    assert backtest.status == Backtest.Status.FAILED
    assert "timeout after 1.0 s" in backtest.error
    assert backtest.duration_ms < 15_000


def test_running_a_backtest_twice_runs_it_once():
    # given a finished backtest
    load_candles(rows=flat_candles(start_ms=START_MS, count=40))
    backtest = backtest_run(backtest_id=_code_backtest(EVERY_CLOSE).pk)
    finished_at = backtest.finished_at

    # when it is run again (a redelivered task)
    again = backtest_run(backtest_id=backtest.pk)

    # then nothing changed
    assert again.finished_at == finished_at
    assert BacktestTrade.objects.filter(backtest=backtest).count() == len(backtest.trades.all())


@pytest.mark.parametrize(
    ("case", "field", "message"),
    [
        ("start after end", "start", "start must be before end"),
        ("no such market", "symbol", "no binance DOGE/BTC 5m candles are stored"),
        ("a period without candles", "start", "no binance ETH/BTC 5m candles between"),
        ("too short for the warm-up", "start", "too short: 8 candles"),
        ("too many candles", "end", "the period has 40 candles; at most 30"),
        ("bad code", "code", "syntax error"),
        ("no resolution", "resolution", "resolution is required with code"),
        ("a fee beyond reason", "fee_bps", "fee_bps must be between 0 and 1000"),
        ("no risk", "risk_per_trade", "risk_per_trade must be in"),
    ],
)
def test_bad_requests_are_refused_with_the_field_and_the_reason(settings, case, field, message):
    # given 40 stored candles, and a cap of 30 per backtest for the case that tests it
    settings.BACKTEST_MAX_CANDLES = 30 if case == "too many candles" else 1000
    rows = flat_candles(start_ms=START_MS, count=40)
    load_candles(rows=rows)
    first, last = ms_to_datetime(rows[0][0]), ms_to_datetime(rows[-1][0]) + STEP
    cases = {
        "start after end": {"start": last, "end": first},
        "no such market": {"symbol": "DOGE/BTC"},
        "a period without candles": {"start": last + STEP * 10, "end": None},
        "too short for the warm-up": {"end": first + STEP * 8},
        "too many candles": {"end": None},
        "bad code": {"code": "def generate_signal(:"},
        "no resolution": {"resolution": ""},
        "a fee beyond reason": {"fee_bps": Decimal("5000")},
        "no risk": {"risk": Decimal("0")},
    }
    given = {"start": first, "end": last, **cases[case]}

    # when the backtest is requested
    with pytest.raises(ValidationError) as raised:
        backtest_create(
            owner=UserFactory(),
            subject=Subject(
                code=given.get("code", EVERY_CLOSE),
                exchange="binance",
                symbol=given.get("symbol", "ETH/BTC"),
                resolution=given.get("resolution", "5m"),
            ),
            period=Period(given.get("start"), given.get("end")),
            sizing=Sizing(Decimal("1"), given.get("risk", Decimal("0.01")), Decimal("1")),
            costs=Costs(given.get("fee_bps", Decimal("0")), Decimal("0")),
        )

    # then the field at fault says why, and nothing was recorded
    assert message in " ".join(raised.value.message_dict[field])
    assert not Backtest.objects.exists()


def test_a_published_strategy_is_backtested_on_its_own_market_code_and_settings():
    # given a strategy on a 1h market with its own settings
    strategy = StrategyFactory(code=EVERY_CLOSE, lookback=10, resolution="1h", settings={"x": 1})
    load_candles(
        rows=flat_candles(start_ms=START_MS - START_MS % 3_600_000, count=30, step_ms=3_600_000),
        resolution="1h",
    )

    # when it is backtested
    backtest = backtest_create(
        owner=strategy.owner,
        subject=Subject(strategy=strategy),
        period=Period(),
        sizing=SIZING,
        costs=Costs(),
    )
    backtest = backtest_run(backtest_id=backtest.pk)

    # then it ran on the strategy's market, with the platform's paper costs, and kept no code
    assert backtest.status == Backtest.Status.DONE, backtest.error
    assert (backtest.resolution, backtest.strategy_settings) == ("1h", {"x": 1})
    assert (backtest.fee_bps, backtest.slippage_bps) == (Decimal("10"), Decimal("5"))
    assert backtest.code == ""
    assert Candle.objects.filter(resolution="1h").count() == 30
