"""A backtest's picture: price with its trades, equity and drawdown, over one time axis.

Drawn with matplotlib's object API (a ``Figure`` on its own Agg canvas), never pyplot's
global state, so charts can be made at the same time in threads or web workers.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from backtests.metrics import drawdown_series, equity_curve
from backtests.results import BacktestSeries, SimTrade

FORMATS = ("png", "svg")
MAX_POINTS = 4000  # per line: far more than a chart's width in pixels
FIGSIZE = (12.0, 9.0)
DPI = 100
LONG_COLOUR, SHORT_COLOUR, EXIT_COLOUR = "#1a9850", "#d73027", "#222222"
PRICE_COLOUR, EQUITY_COLOUR, DRAWDOWN_COLOUR = "#4a6fa5", "#6a3d9a", "#d73027"

Array = np.ndarray
SECONDS_PER_DAY = 86400.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def backtest_chart(*, series: BacktestSeries, fmt: str = "png", title: str = "") -> bytes:
    """The chart as PNG or SVG bytes; a "no data" picture for a series without candles."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown chart format {fmt!r}: expected one of {', '.join(FORMATS)}")
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if series.times:
        _draw_panels(figure, series=series)
    else:
        _draw_no_data(figure)
    if title:
        # Titles are user text: "$" must not switch to mathtext (it can fail to parse).
        figure.suptitle(title, parse_math=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def downsample(x: Array, y: Array, *, limit: int = MAX_POINTS) -> tuple[Array, Array]:
    """At most ``limit`` points of a line: each bucket keeps its first, last, min and max.

    The extremes survive, so spikes and the deepest drawdown still show at any length.
    """
    if len(x) <= limit:
        return x, y
    buckets = max(1, limit // 4)
    edges = np.linspace(0, len(x), buckets + 1, dtype=np.int64)
    keep: list[Array] = []
    for first, last in pairwise(edges.tolist()):
        chunk = y[first:last]
        keep.append(first + np.array([0, chunk.argmin(), chunk.argmax(), len(chunk) - 1]))
    indices = np.unique(np.concatenate(keep))
    return x[indices], y[indices]


def _draw_panels(figure: Figure, *, series: BacktestSeries) -> None:
    price, equity, drawdown = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    curve_times, curve = equity_curve(series=series)
    curve_x = _dates(curve_times)
    _draw_price(price, series=series, x=curve_x[1:])  # the curve starts one open earlier
    _draw_equity(equity, series=series, x=curve_x, curve=curve)
    _draw_drawdown(drawdown, x=curve_x, curve=curve)
    locator = mdates.AutoDateLocator()
    drawdown.xaxis.set_major_locator(locator)
    drawdown.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    drawdown.set_xlabel("time (UTC)")


def _draw_price(axes: Axes, *, series: BacktestSeries, x: Array) -> None:
    axes.plot(
        *downsample(x, _floats(series.closes)), color=PRICE_COLOUR, linewidth=0.9, label="close"
    )
    _draw_entries(axes, [t for t in series.trades if t.side == "long"], "^", LONG_COLOUR, "long")
    _draw_entries(axes, [t for t in series.trades if t.side == "short"], "v", SHORT_COLOUR, "short")
    exits = [
        (t.exit_time, t.exit_price)
        for t in series.trades
        if t.exit_time is not None and t.exit_price is not None
    ]
    if exits:
        axes.scatter(
            _dates([time for time, _ in exits]),
            _floats([price for _, price in exits]),
            marker="x", color=EXIT_COLOUR, s=30, zorder=3, label="exit",
        )  # fmt: skip
    axes.set_ylabel("price", parse_math=False)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")


def _draw_entries(axes: Axes, trades: list[SimTrade], marker: str, colour: str, side: str) -> None:
    if not trades:
        return
    axes.scatter(
        _dates([t.entry_time for t in trades]),
        _floats([t.entry_price for t in trades]),
        marker=marker, color=colour, s=40, zorder=3, label=f"{side} entry",
    )  # fmt: skip


def _draw_equity(axes: Axes, *, series: BacktestSeries, x: Array, curve: list[Decimal]) -> None:
    axes.plot(*downsample(x, _floats(curve)), color=EQUITY_COLOUR, linewidth=1.0)
    axes.axhline(float(series.capital), color="#888888", linewidth=0.8, linestyle="--")
    axes.set_ylabel(f"equity ({series.quote})", parse_math=False)
    axes.grid(alpha=0.3)


def _draw_drawdown(axes: Axes, *, x: Array, curve: list[Decimal]) -> None:
    x, y = downsample(x, -_floats(drawdown_series(curve)))
    axes.fill_between(x, y, 0.0, color=DRAWDOWN_COLOUR, alpha=0.35, linewidth=0)
    axes.plot(x, y, color=DRAWDOWN_COLOUR, linewidth=0.7)
    axes.set_ylabel("drawdown (%)", parse_math=False)
    deepest = float(y.min())
    axes.set_ylim(deepest * 1.1 if deepest < 0 else -1.0, 0.0)
    axes.grid(alpha=0.3)


def _draw_no_data(figure: Figure) -> None:
    axes = figure.subplots()
    axes.set_axis_off()
    axes.text(
        0.5, 0.5, "no data: the backtest has no candles",
        ha="center", va="center", fontsize=16, color="#555555", parse_math=False,
    )  # fmt: skip


def _dates(times: list[datetime]) -> Array:
    """Matplotlib date numbers (days), from POSIX seconds: 100k datetimes in milliseconds."""
    seconds = np.array([t.timestamp() for t in times], dtype=float)
    return seconds / SECONDS_PER_DAY + mdates.date2num(EPOCH)


def _floats(values: list[Decimal]) -> Array:
    return np.array([float(v) for v in values], dtype=float)
