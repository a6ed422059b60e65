"""A backtest's figures, computed from its series alone (no database), ready for JSON.

Conventions of the values returned:
    * money (quote currency) and percentages are computed in ``Decimal`` and returned as
      strings in plain notation ("12.5", never "1.25E+1"); percentages are percentages
      (12.5 means 12.5 %), rounded to 0.0001 %, money to the 8 places the money fields keep;
    * ratios (Sharpe, Sortino, Calmar, profit factor) are floats rounded to 4 places;
    * durations are whole seconds, times ISO 8601 (UTC);
    * ``None`` where a figure is undefined (no closed trade, no losing trade, a flat curve...).

The equity curve the figures read starts with the capital at the open of the first candle,
then the equity at each candle's close: a fee paid or a loss taken in the first candle is a
drawdown and a return like any other.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import Any

from backtests.results import BacktestSeries, SimTrade
from core.time_utils import resolution_to_timedelta

ZERO = Decimal("0")
ONE = Decimal("1")
HUNDRED = Decimal("100")
PCT_STEP = Decimal("0.0001")
MONEY_STEP = Decimal("0.00000001")  # the 8 decimal places of the MONEY fields
RATIO_DIGITS = 4
YEAR = timedelta(days=365)
# Why: compounding a few hours to a year gives numbers with hundreds of digits that say
# nothing; CAGR (and Calmar, built on it) wait for at least a day of history.
MIN_ANNUALISED_PERIOD = timedelta(days=1)


@dataclass(frozen=True)
class Drawdown:
    """The deepest fall of the curve (peak to trough) and the longest time spent under water."""

    depth_pct: Decimal
    peak_time: datetime | None
    trough_time: datetime | None
    longest_s: int


def backtest_metrics(*, series: BacktestSeries) -> dict[str, Any]:
    """Every figure of a backtest (see the module docstring for units and ``None``)."""
    times, equity = equity_curve(series=series)
    growth = equity[-1] / series.capital if equity and series.capital > 0 else None
    cagr = _cagr_pct(growth=growth, period=times[-1] - times[0] if times else timedelta(0))
    drawdown = _max_drawdown(times=times, equity=equity)
    return {
        **_period_figures(series=series, times=times),
        "net_return_pct": _pct((growth - ONE) * HUNDRED if growth is not None else None),
        "buy_and_hold_return_pct": _pct(_buy_and_hold_pct(closes=series.closes)),
        "cagr_pct": _pct(cagr),
        **_drawdown_figures(drawdown),
        **_ratio_figures(series=series, equity=equity),
        "calmar": _ratio(_calmar(cagr_pct=cagr, drawdown_pct=drawdown.depth_pct)),
        **_trade_figures(trades=series.trades),
        "exposure_pct": _pct(_exposure_pct(series=series)),
        "fees_paid": _money(sum((t.entry_fee + t.exit_fee for t in series.trades), ZERO)),
    }


def equity_curve(*, series: BacktestSeries) -> tuple[list[datetime], list[Decimal]]:
    """The capital at the first candle's open, then the equity at each close."""
    if not series.times:
        return [], []
    start = series.times[0] - resolution_to_timedelta(series.resolution)
    return [start, *series.times], [series.capital, *series.equity]


def drawdown_series(equity: list[Decimal]) -> list[Decimal]:
    """Percent below the running peak at each point, 0 at every peak."""
    drawdowns: list[Decimal] = []
    peak: Decimal | None = None
    for value in equity:
        peak = value if peak is None or value > peak else peak
        # A curve that never rose above zero has no peak to fall from.
        if value is peak:  # at a new peak, or flat on it (the same equity object): 0
            drawdowns.append(ZERO)
        else:
            drawdowns.append((peak - value) / peak * HUNDRED if peak > 0 else ZERO)
    return drawdowns


def _period_figures(*, series: BacktestSeries, times: list[datetime]) -> dict[str, Any]:
    """The period as a ``Backtest`` stores it: the first candle's open, the last one's close."""
    return {
        "capital": _money(series.capital),
        "final_equity": _money(series.equity[-1] if series.equity else series.capital),
        "currency": series.quote,
        "candles": len(series.times),
        "start": _iso(times[0]) if times else None,
        "end": _iso(times[-1]) if times else None,
    }


def _buy_and_hold_pct(*, closes: list[Decimal]) -> Decimal | None:
    if not closes or closes[0] <= 0:
        return None
    return (closes[-1] / closes[0] - ONE) * HUNDRED


def _cagr_pct(*, growth: Decimal | None, period: timedelta) -> Decimal | None:
    if growth is None or period < MIN_ANNUALISED_PERIOD:
        return None
    if growth <= 0:
        return -HUNDRED  # everything lost, whatever the period
    exponent = Decimal(YEAR.total_seconds()) / Decimal(period.total_seconds())
    return (growth**exponent - ONE) * HUNDRED


def _drawdown_figures(drawdown: Drawdown) -> dict[str, Any]:
    return {
        "max_drawdown_pct": _pct(drawdown.depth_pct),
        "max_drawdown_duration_s": drawdown.longest_s,
        "max_drawdown_start": _iso(drawdown.peak_time),
        "max_drawdown_end": _iso(drawdown.trough_time),
    }


def _ratio_figures(*, series: BacktestSeries, equity: list[Decimal]) -> dict[str, Any]:
    candles_per_year = YEAR / resolution_to_timedelta(series.resolution)
    scale = math.sqrt(candles_per_year)
    returns = _candle_returns(equity)
    return {
        "sharpe": _ratio(_sharpe(returns, scale=scale)),
        "sortino": _ratio(_sortino(returns, scale=scale)),
        "annualisation": (
            f"per-candle simple returns of the equity, risk-free rate 0, "
            f"x sqrt({candles_per_year:g}) ({series.resolution} candles in 365 days)"
        ),
    }


def _max_drawdown(*, times: list[datetime], equity: list[Decimal]) -> Drawdown:
    drawdowns = drawdown_series(equity)
    longest = _longest_underwater_s(times=times, drawdowns=drawdowns)
    if not drawdowns or max(drawdowns) == 0:
        return Drawdown(depth_pct=ZERO, peak_time=None, trough_time=None, longest_s=longest)
    trough = max(range(len(drawdowns)), key=drawdowns.__getitem__)
    peak = max(i for i in range(trough + 1) if drawdowns[i] == 0)
    return Drawdown(
        depth_pct=drawdowns[trough],
        peak_time=times[peak],
        trough_time=times[trough],
        longest_s=longest,
    )


def _longest_underwater_s(*, times: list[datetime], drawdowns: list[Decimal]) -> int:
    """Longest time from a peak until the curve is back to it (or, never back, to the end)."""
    longest = timedelta(0)
    peak_time: datetime | None = None
    underwater = False
    for time, drawdown in zip(times, drawdowns, strict=True):
        if drawdown == 0:
            if underwater and peak_time is not None:
                longest = max(longest, time - peak_time)
            peak_time, underwater = time, False
        else:
            underwater = True
    if underwater and peak_time is not None:
        longest = max(longest, times[-1] - peak_time)
    return int(longest.total_seconds())


def _candle_returns(equity: list[Decimal]) -> list[float]:
    # Why: after a ruin (equity at or below zero) a simple return means nothing.
    # A flat account repeats the same equity object: its return is 0 without a division.
    return [
        0.0 if after is before else float(after / before - ONE)
        for before, after in pairwise(equity)
        if before > 0
    ]


def _sharpe(returns: list[float], *, scale: float) -> float | None:
    if len(returns) < 2:
        return None
    deviation = statistics.stdev(returns)
    return statistics.fmean(returns) / deviation * scale if deviation > 0 else None


def _sortino(returns: list[float], *, scale: float) -> float | None:
    """Mean return over the downside deviation (target 0, averaged over every candle)."""
    if not returns:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    return statistics.fmean(returns) / downside * scale if downside > 0 else None


def _calmar(*, cagr_pct: Decimal | None, drawdown_pct: Decimal) -> float | None:
    if cagr_pct is None or drawdown_pct <= 0:
        return None
    return float(cagr_pct / drawdown_pct)


def _trade_figures(*, trades: list[SimTrade]) -> dict[str, Any]:
    closed = [trade for trade in trades if not trade.is_open]
    pnls = [_pnl(trade) for trade in closed]
    gross_profit = sum((p for p in pnls if p > 0), ZERO)
    gross_loss = sum((p for p in pnls if p < 0), ZERO)  # negative (or 0): what losers lost
    wins = sum(1 for p in pnls if p > 0)
    holdings = [_holding_s(trade) for trade in closed]
    return {
        "trades": len(closed),
        "open_trades": len(trades) - len(closed),
        "wins": wins,
        "losses": sum(1 for p in pnls if p < 0),
        "win_rate_pct": _pct(Decimal(wins) / len(closed) * HUNDRED if closed else None),
        "profit_factor": _ratio(float(gross_profit / -gross_loss) if gross_loss < 0 else None),
        "expectancy": _money(sum(pnls, ZERO) / len(pnls) if pnls else None),
        "gross_profit": _money(gross_profit),
        "gross_loss": _money(gross_loss),
        "avg_holding_s": round(sum(holdings) / len(holdings)) if holdings else None,
        "longest_holding_s": max(holdings) if holdings else None,
    }


def _pnl(trade: SimTrade) -> Decimal:
    return trade.pnl if trade.pnl is not None else ZERO


def _holding_s(trade: SimTrade) -> int:
    exit_time = trade.exit_time if trade.exit_time is not None else trade.entry_time
    return int((exit_time - trade.entry_time).total_seconds())


def _exposure_pct(*, series: BacktestSeries) -> Decimal | None:
    """Share of candles during which a position was open, for at least part of the candle."""
    if not series.times:
        return None
    candle = resolution_to_timedelta(series.resolution)
    held = _union_length([_held_candles(series.times, trade, candle) for trade in series.trades])
    return Decimal(held) / len(series.times) * HUNDRED


def _held_candles(times: list[datetime], trade: SimTrade, candle: timedelta) -> tuple[int, int]:
    """Indices [first, last) of the candles (open, close] the trade overlaps."""
    # Entered at the signal candle's close: held from the next candle on.
    first = bisect_right(times, trade.entry_time)
    # Exited inside or at the close of a candle: that candle was held, the next one not.
    last = len(times) if trade.exit_time is None else bisect_left(times, trade.exit_time + candle)
    return first, max(first, last)


def _union_length(ranges: list[tuple[int, int]]) -> int:
    """How many indices the half-open ranges cover together (a reversal shares a candle)."""
    covered, reach = 0, 0
    for first, last in sorted(ranges):
        start = max(first, reach)
        if last > start:
            covered += last - start
            reach = last
    return covered


def _plain(value: Decimal, step: Decimal) -> str:
    # Why: a precision wide enough for the value, so a huge CAGR rounds instead of raising.
    with localcontext() as context:
        context.prec = max(28, value.adjusted() + 12)
        rounded = value.quantize(step)
        return format(rounded.normalize() if rounded else Decimal(0), "f")


def _pct(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value, PCT_STEP)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value, MONEY_STEP)


def _ratio(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, RATIO_DIGITS)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
