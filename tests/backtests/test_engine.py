"""The backtest's account, fed signals by hand: fills, fees, slippage, stops and targets."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from backtests.engine import Account, Bar, Sizing
from backtests.results import BacktestSeries
from trades.brokers import PaperBroker

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP_MS = 300_000


def _account(capital="1000", risk="0.01", leverage="1", fee_bps="10", slippage_bps="5"):
    series = BacktestSeries(resolution="5m", capital=Decimal(capital), quote="USDT")
    sizing = Sizing(Decimal(capital), Decimal(risk), Decimal(leverage))
    broker = PaperBroker(fee_bps=Decimal(fee_bps), slippage_bps=Decimal(slippage_bps))
    return Account(sizing=sizing, broker=broker, series=series), series


def _bar(i, o, h, lo, c):
    return Bar.from_row(
        [int(T0.timestamp() * 1000) + i * STEP_MS, o, h, lo, c, 1.0], step_ms=STEP_MS
    )


def _close(account, bar, raw=None):
    account.check_stops(bar)
    account.apply(raw, bar)
    account.mark(bar)


def test_an_entry_fills_at_the_close_with_slippage_and_pays_the_fee():
    # given an account with 10 bps fees and 5 bps slippage
    account, series = _account()

    # when a LONG without stop comes at a close of 100
    _close(account, _bar(0, 99, 101, 98, 100), {"signal": "LONG"})

    # then it buys at 100.05 and pays 10 bps of the notional
    trade = series.trades[0]
    assert trade.entry_price == Decimal("100.05")
    assert trade.quantity == Decimal("0.1")  # sized at the close, as paper is: 1000 * 0.01 / 100
    assert trade.entry_fee == (Decimal("100.05") * trade.quantity * Decimal("0.001")).quantize(
        Decimal("0.00000001")
    )
    # valued at the close net of the entry fee
    assert series.equity == [
        Decimal("1000")
        + ((Decimal("100") - Decimal("100.05")) * trade.quantity - trade.entry_fee).quantize(
            Decimal("0.00000001")
        )
    ]


def test_an_exit_signal_closes_at_the_close_and_books_pnl_net_of_both_fees():
    # given an open long
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(account, _bar(0, 100, 100, 100, 100), {"signal": "LONG"})

    # when the strategy exits at a close of 110
    _close(account, _bar(1, 105, 111, 104, 110), {"signal": "EXIT_LONG"})

    # then the trade made (110 - 100) x quantity, and equity holds it
    trade = series.trades[0]
    assert (trade.exit_price, trade.exit_reason) == (Decimal("110"), "exit signal")
    assert trade.pnl == (Decimal("10") * trade.quantity).quantize(Decimal("0.00000001"))
    assert series.equity[-1] == Decimal("1000") + trade.pnl


def test_a_stop_touched_inside_a_candle_fills_at_the_stop():
    # given a long from 100 with a stop at 95 and a target at 120
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(
        account, _bar(0, 100, 100, 100, 100), {"signal": "LONG", "stopLoss": 95, "takeProfit": 120}
    )

    # when the next candle trades down to 94 and closes at 97
    _close(account, _bar(1, 99, 99.5, 94, 97))

    # then the stop filled at 95, and the risk taken was 1 % of capital
    trade = series.trades[0]
    assert (trade.exit_price, trade.exit_reason) == (Decimal("95"), "stop loss")
    assert trade.pnl == Decimal("-10.00000000")


def test_a_target_touched_inside_a_candle_fills_at_the_target():
    # given a long with a target at 105
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(
        account, _bar(0, 100, 100, 100, 100), {"signal": "LONG", "stopLoss": 90, "takeProfit": 105}
    )

    # when the next candle reaches 106
    _close(account, _bar(1, 101, 106, 100.5, 104))

    # then the target filled at 105
    assert (series.trades[0].exit_price, series.trades[0].exit_reason) == (
        Decimal("105"),
        "take profit",
    )


def test_a_candle_touching_stop_and_target_takes_the_stop():
    # given a long with stop 95 and target 105
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(
        account, _bar(0, 100, 100, 100, 100), {"signal": "LONG", "stopLoss": 95, "takeProfit": 105}
    )

    # when one candle spans both
    _close(account, _bar(1, 100, 106, 94, 100))

    # then the conservative reading: the stop
    assert series.trades[0].exit_reason == "stop loss"


def test_a_gap_through_the_stop_fills_at_the_open():
    # given a long with a stop at 95
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(account, _bar(0, 100, 100, 100, 100), {"signal": "LONG", "stopLoss": 95})

    # when the next candle opens at 90
    _close(account, _bar(1, 90, 92, 89, 91))

    # then the fill is at 90, a price the market traded, not at 95
    assert series.trades[0].exit_price == Decimal("90")


def test_a_leveraged_short_profits_from_a_fall_and_slippage_works_against_it():
    # given a 3x short with a stop 2 % above the close
    account, series = _account(
        capital="100", risk="0.02", leverage="3", fee_bps="0", slippage_bps="10"
    )
    _close(account, _bar(0, 50, 50, 50, 50), {"signal": "SHORT", "stopLoss": 51})

    # when the strategy covers at 45
    _close(account, _bar(1, 48, 48, 44, 45), {"signal": "EXIT_SHORT"})

    # then it sold lower and bought back higher than the closes (slippage), sized by the stop:
    # risk 2 of 100 over a 1.0 stop distance = 2 units (notional 100, within 3x leverage)
    trade = series.trades[0]
    assert trade.side == "short"
    assert trade.quantity == Decimal("2")
    assert trade.entry_price == Decimal("49.95")
    assert trade.exit_price == Decimal("45.045")
    assert trade.pnl == Decimal("9.81000000")


def test_an_opposite_signal_reverses_the_position():
    # given an open long
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(account, _bar(0, 100, 100, 100, 100), {"signal": "LONG"})

    # when a SHORT comes
    _close(account, _bar(1, 100, 102, 99, 101), {"signal": "SHORT"})

    # then the long is closed at the close and a short opened there
    long, short = series.trades
    assert (long.exit_reason, long.exit_price) == ("reversed by an opposite signal", Decimal("101"))
    assert (short.side, short.entry_price, short.is_open) == ("short", Decimal("101"), True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"signal": "LONG"}, "a long position is already open"),
        ({"signal": "LONG", "stopLoss": 200}, "invalid signal: stopLoss 200 must be below"),
        ({"signal": "BUY"}, "invalid signal: unknown signal"),
        ([1, 2], "invalid signal: generate_signal must return a dict or None"),
    ],
)
def test_signals_not_acted_on_are_skipped_with_the_reason(raw, reason):
    # given an open long
    account, series = _account()
    _close(account, _bar(0, 100, 100, 100, 100), {"signal": "LONG"})

    # when a signal comes that cannot be acted on
    _close(account, _bar(1, 100, 100, 100, 100), raw)

    # then nothing else is traded and the skip says why
    assert len(series.trades) == 1
    assert series.skips[-1].reason.startswith(reason)


def test_a_position_that_rounds_to_zero_is_skipped():
    # given a tiny capital
    account, series = _account(capital="0.00000001")

    # when a LONG comes at a high price
    _close(account, _bar(0, 60000, 60000, 60000, 60000), {"signal": "LONG"})

    # then no trade, and the reason is the platform's
    assert series.trades == []
    assert series.skips[0].reason == "position size rounds to zero"


@pytest.mark.parametrize(
    ("side", "levels", "candle", "reason"),
    [
        ("LONG", (0.0955, 0.1201), (0.1, 0.11, 0.0955, 0.1), "stop loss"),  # low on the stop
        ("LONG", (0.0955, 0.1201), (0.1, 0.1201, 0.099, 0.1), "take profit"),  # high on target
        ("LONG", (0.0955, 0.1201), (0.1201, 0.1201, 0.1, 0.1), "take profit"),  # opens on it
        ("SHORT", (0.1201, 0.0955), (0.1, 0.1201, 0.099, 0.1), "stop loss"),
        ("SHORT", (0.1201, 0.0955), (0.1, 0.11, 0.0955, 0.1), "take profit"),
        ("LONG", (0.0955, 0.1201), (0.0954999, 0.1, 0.0955001, 0.1), "stop loss"),  # bad row
    ],
)
def test_a_level_reached_exactly_is_hit_whatever_the_float_digits(side, levels, candle, reason):
    # given a position with levels that floats do not hold exactly
    account, series = _account(fee_bps="0", slippage_bps="0")
    stop, target = levels
    raw = {"signal": side, "stopLoss": stop, "takeProfit": target}
    _close(account, _bar(0, 0.1, 0.1, 0.1, 0.1), raw)
    _close(account, _bar(1, 0.1, 0.1001, 0.0999, 0.1))  # a candle well inside: nothing

    # when a candle reaches one level exactly (or opens past it)
    _close(account, _bar(2, *candle))

    # then the level fills, as paper trading's exact check says
    assert series.trades[0].exit_reason == reason
    assert account.position is None


def test_a_resumed_account_values_and_stops_its_stored_position():
    # given the state of an account that holds a long from 100, stop 95, 5 realized
    account, series = _account(fee_bps="0", slippage_bps="0")
    _close(account, _bar(0, 100, 100, 100, 100), {"signal": "LONG", "stopLoss": 95})
    stored = series.trades[0]
    resumed, resumed_series = _account(fee_bps="0", slippage_bps="0")

    # when another account carries on from it, over a close and then a candle to the stop
    resumed.resume(position=stored, realized=Decimal("5"))
    _close(resumed, _bar(1, 100, 101, 99, 100))
    _close(resumed, _bar(2, 98, 99, 94, 96))

    # then equity counts the realized PnL and the stop fills
    assert resumed_series.equity[0] == Decimal("1005")
    assert stored.exit_reason == "stop loss" and stored.exit_price == Decimal("95")
    assert resumed_series.equity[-1] == Decimal("1005") + stored.pnl
