import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from backtests.metrics import backtest_metrics, drawdown_series
from backtests.results import BacktestSeries, SimTrade, Skip

D = Decimal
OPEN = datetime(2024, 1, 1, tzinfo=UTC)  # the first candle's open
FIVE_MINUTES = timedelta(minutes=5)


def closes_at(count: int, step: timedelta = FIVE_MINUTES) -> list[datetime]:
    return [OPEN + step * (i + 1) for i in range(count)]


def make_series(
    *,
    equity: list[str],
    closes: list[str] | None = None,
    trades: list[SimTrade] | None = None,
    resolution: str = "5m",
    capital: str = "1000",
    skips: list[Skip] | None = None,
) -> BacktestSeries:
    """A series whose candles close every ``resolution`` from OPEN on."""
    step = {"5m": FIVE_MINUTES, "1d": timedelta(days=1)}[resolution]
    return BacktestSeries(
        resolution=resolution,
        capital=D(capital),
        quote="BTC",
        times=closes_at(len(equity), step),
        closes=[D(c) for c in closes or ["100"] * len(equity)],
        equity=[D(e) for e in equity],
        trades=trades or [],
        skips=skips or [],
    )


def two_trade_series() -> BacktestSeries:
    """5 candles of 5m: a winning long, then a losing short entered on the long's exit.

    closes 100 110 105 112 108 (00:05 .. 00:25)
    long 1 @100 (00:05, fee 0.1) -> @110 (00:10, fee 0.1): pnl 10 - 0.2 = 9.8
    short 2 @110 (00:10, fee 0.2) -> @112 (00:20, fee 0.2): pnl -4 - 0.4 = -4.4
    equity 999.9 (entry fee), 1009.6, 1019.6 (short +10 unrealized), 1005.4, 1005.4
    """
    t = closes_at(5)
    long = SimTrade(
        side="long", quantity=D("1"), entry_time=t[0], entry_price=D("100"), entry_fee=D("0.1"),
        exit_time=t[1], exit_price=D("110"), exit_fee=D("0.1"), pnl=D("9.8"),
        exit_reason="exit signal",
    )  # fmt: skip
    short = SimTrade(
        side="short", quantity=D("2"), entry_time=t[1], entry_price=D("110"), entry_fee=D("0.2"),
        exit_time=t[3], exit_price=D("112"), exit_fee=D("0.2"), pnl=D("-4.4"),
        exit_reason="stop loss",
    )  # fmt: skip
    return make_series(
        equity=["999.9", "1009.6", "1019.6", "1005.4", "1005.4"],
        closes=["100", "110", "105", "112", "108"],
        trades=[long, short],
        skips=[
            Skip(time=t[2], signal="LONG", reason="already in a position"),
            Skip(time=t[4], signal="SHORT", reason="already in a position"),
            Skip(time=t[4], signal="LONG", reason="quantity rounds to zero"),
        ],
    )


def hand_returns(curve: list[str]) -> list[float]:
    values = [float(v) for v in curve]
    return [values[i] / values[i - 1] - 1 for i in range(1, len(values))]


def test_returns_and_account_figures_of_two_trades():
    # given the two-trade series
    series = two_trade_series()
    # when measured
    m = backtest_metrics(series=series)
    # then the account ends 5.4 up on 1000, while holding the market made 8 %
    assert D(m["net_return_pct"]) == D("0.54")
    assert D(m["buy_and_hold_return_pct"]) == D("8")
    assert D(m["final_equity"]) == D("1005.4")
    assert D(m["capital"]) == D("1000")
    assert D(m["fees_paid"]) == D("0.6")
    assert m["currency"] == "BTC"
    assert m["candles"] == 5
    assert m["start"] == "2024-01-01T00:00:00+00:00"  # the first candle's open
    assert m["end"] == "2024-01-01T00:25:00+00:00"


def test_drawdown_is_the_deepest_fall_from_a_peak_and_the_longest_time_under_water():
    # given the curve 1000 (open), 999.9, 1009.6, 1019.6, 1005.4, 1005.4
    series = two_trade_series()
    # when measured
    m = backtest_metrics(series=series)
    # then the deepest fall is 1019.6 -> 1005.4, from 00:15 to 00:20
    assert D(m["max_drawdown_pct"]) == (D("14.2") / D("1019.6") * 100).quantize(D("0.0001"))
    assert m["max_drawdown_start"] == "2024-01-01T00:15:00+00:00"
    assert m["max_drawdown_end"] == "2024-01-01T00:20:00+00:00"
    # and the longest time under water is from 00:15 to the end (never regained), not the
    # first candle's fee (00:00 -> 00:10)
    assert m["max_drawdown_duration_s"] == 600


def test_trade_figures_of_a_winner_and_a_loser():
    # given the two-trade series
    # when measured
    m = backtest_metrics(series=two_trade_series())
    # then
    assert (m["trades"], m["open_trades"], m["wins"], m["losses"]) == (2, 0, 1, 1)
    assert D(m["win_rate_pct"]) == D("50")
    assert m["profit_factor"] == round(9.8 / 4.4, 4)
    assert D(m["expectancy"]) == D("2.7")
    assert D(m["gross_profit"]) == D("9.8")
    assert D(m["gross_loss"]) == D("-4.4")
    assert m["avg_holding_s"] == 450  # 5 and 10 minutes
    assert m["longest_holding_s"] == 600


def test_exposure_counts_the_candles_a_position_was_held():
    # given a long held through the 00:10 candle and a short through 00:15 and 00:20
    # when measured
    m = backtest_metrics(series=two_trade_series())
    # then 3 of the 5 candles had a position, the reversal's candle counted once
    assert D(m["exposure_pct"]) == D("60")


def test_sharpe_and_sortino_follow_the_per_candle_formula():
    # given the curve, its five per-candle returns computed here by hand
    returns = hand_returns(["1000", "999.9", "1009.6", "1019.6", "1005.4", "1005.4"])
    scale = math.sqrt(365 * 24 * 12)  # 5m candles in 365 days
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * scale
    downside = math.sqrt(sum(min(r, 0) ** 2 for r in returns) / len(returns))
    sortino = statistics.mean(returns) / downside * scale
    # when measured
    m = backtest_metrics(series=two_trade_series())
    # then
    assert m["sharpe"] == pytest.approx(sharpe, abs=1e-4)
    assert m["sortino"] == pytest.approx(sortino, abs=1e-4)
    assert "sqrt(105120)" in m["annualisation"]
    assert "risk-free rate 0" in m["annualisation"]


def test_cagr_and_calmar_over_days():
    # given 5 daily candles: 1000 -> 1020 -> 990 -> 1000 -> 1010, capital 1000
    series = make_series(equity=["1000", "1020", "990", "1000", "1010"], resolution="1d")
    # when measured
    m = backtest_metrics(series=series)
    # then 1 % in 5 days compounds to 1.01 ** 73 over a year
    cagr = (1.01 ** (365 / 5) - 1) * 100
    assert float(m["cagr_pct"]) == pytest.approx(cagr, abs=1e-4)
    drawdown = 30 / 1020 * 100
    assert float(m["max_drawdown_pct"]) == pytest.approx(drawdown, abs=1e-4)
    assert m["calmar"] == pytest.approx(cagr / drawdown, abs=1e-3)
    # and the peak of day 2 is never regained: under water from its close to the end
    assert m["max_drawdown_duration_s"] == 3 * 86400
    assert "sqrt(365)" in m["annualisation"]


def test_cagr_and_calmar_wait_for_a_day_of_history():
    # given 25 minutes of 5m candles
    # when measured
    m = backtest_metrics(series=two_trade_series())
    # then nothing is annualised from so little
    assert m["cagr_pct"] is None
    assert m["calmar"] is None


def test_a_flat_curve_without_trades_leaves_ratios_undefined():
    # given no trade and an equity that never moves
    series = make_series(equity=["1000"] * 5)
    # when measured
    m = backtest_metrics(series=series)
    # then
    assert D(m["net_return_pct"]) == 0
    assert D(m["max_drawdown_pct"]) == 0
    assert m["max_drawdown_duration_s"] == 0
    assert m["max_drawdown_start"] is None and m["max_drawdown_end"] is None
    assert m["sharpe"] is None and m["sortino"] is None
    assert (m["trades"], m["wins"], m["losses"]) == (0, 0, 0)
    for key in ("win_rate_pct", "profit_factor", "expectancy", "avg_holding_s"):
        assert m[key] is None, key
    assert D(m["exposure_pct"]) == 0
    assert D(m["fees_paid"]) == 0


def test_without_a_losing_trade_there_is_no_profit_factor_and_no_sortino():
    # given one winner and an equity that only rises
    t = closes_at(3)
    winner = SimTrade(
        side="long", quantity=D("1"), entry_time=t[0], entry_price=D("100"), entry_fee=D("0"),
        exit_time=t[2], exit_price=D("110"), pnl=D("10"), exit_reason="take profit",
    )  # fmt: skip
    series = make_series(equity=["1000", "1005", "1010"], trades=[winner])
    # when measured
    m = backtest_metrics(series=series)
    # then
    assert m["profit_factor"] is None
    assert m["sortino"] is None  # no downside to divide by
    assert m["sharpe"] is not None
    assert D(m["win_rate_pct"]) == 100
    assert m["losses"] == 0


def test_an_open_trade_is_exposure_and_fees_but_not_a_closed_trade():
    # given a long entered at the second close and still open after the fourth
    t = closes_at(4)
    open_long = SimTrade(
        side="long", quantity=D("1"), entry_time=t[1], entry_price=D("100"), entry_fee=D("0.3")
    )
    series = make_series(equity=["1000", "999.7", "1001", "1002"], trades=[open_long])
    # when measured
    m = backtest_metrics(series=series)
    # then the last two candles were held
    assert (m["trades"], m["open_trades"]) == (0, 1)
    assert D(m["exposure_pct"]) == 50
    assert D(m["fees_paid"]) == D("0.3")
    assert m["longest_holding_s"] is None


def test_an_intra_candle_exit_holds_that_candle_only():
    # given a stop hit at 00:12, inside the candle closing at 00:15
    t = closes_at(4)
    stopped = SimTrade(
        side="long", quantity=D("1"), entry_time=t[0], entry_price=D("100"), entry_fee=D("0"),
        exit_time=t[1] + timedelta(minutes=2), exit_price=D("98"), pnl=D("-2"),
        exit_reason="stop loss",
    )  # fmt: skip
    series = make_series(equity=["1000", "999", "998", "998"], trades=[stopped])
    # when measured
    m = backtest_metrics(series=series)
    # then the 00:10 and 00:15 candles were held, not the 00:20 one
    assert D(m["exposure_pct"]) == 50
    assert m["longest_holding_s"] == 420


def test_a_recovered_drawdown_lasts_until_the_peak_is_regained():
    # given 1000 (open) -> 1100 -> 990 -> 1050 -> 1100 -> 1200
    series = make_series(equity=["1100", "990", "1050", "1100", "1200"])
    # when measured
    m = backtest_metrics(series=series)
    # then under water from 00:05 (1100) until 00:20 (1100 again)
    assert m["max_drawdown_duration_s"] == 900
    assert D(m["max_drawdown_pct"]) == D("10")
    assert m["max_drawdown_start"] == "2024-01-01T00:05:00+00:00"
    assert m["max_drawdown_end"] == "2024-01-01T00:10:00+00:00"


def test_an_empty_series_has_figures_but_no_period():
    # given no candle at all
    series = BacktestSeries(resolution="1h", capital=D("500"), quote="USDT")
    # when measured
    m = backtest_metrics(series=series)
    # then
    assert m["candles"] == 0
    assert m["start"] is None and m["end"] is None
    assert D(m["final_equity"]) == D("500")
    assert m["net_return_pct"] is None and m["buy_and_hold_return_pct"] is None
    assert m["sharpe"] is None and m["exposure_pct"] is None
    assert m["currency"] == "USDT"


def test_values_are_json_ready_and_in_plain_notation():
    # given tiny amounts, which Decimal would print in exponent notation
    t = closes_at(2)
    dust = SimTrade(
        side="long", quantity=D("0.0001"), entry_time=t[0], entry_price=D("0.05"),
        entry_fee=D("1E-8"), exit_time=t[1], exit_price=D("0.06"), exit_fee=D("1E-8"),
        pnl=D("9.8E-7"),
    )  # fmt: skip
    series = make_series(equity=["0.01", "0.01000098"], capital="0.01", trades=[dust])
    # when measured and serialised
    m = backtest_metrics(series=series)
    text = json.dumps(m)
    # then nothing needs a custom encoder and no figure is in exponent notation
    assert json.loads(text) == m
    assert m["fees_paid"] == "0.00000002"
    assert m["expectancy"] == "0.00000098"
    strings = [v for k, v in m.items() if isinstance(v, str) and k != "annualisation"]
    assert not any("E" in s for s in strings)


def test_drawdown_series_is_percent_below_the_running_peak():
    # given
    equity = [D(v) for v in ["100", "120", "90", "120", "130", "65"]]
    # when
    drawdowns = drawdown_series(equity)
    # then
    assert drawdowns == [D("0"), D("0"), D("25"), D("0"), D("0"), D("50")]
    assert drawdown_series([]) == []
