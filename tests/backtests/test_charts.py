import io
import math
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from matplotlib.image import imread

from backtests.charts import MAX_POINTS, backtest_chart, downsample
from backtests.results import BacktestSeries, SimTrade
from tests.backtests.test_metrics import OPEN, two_trade_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def long_series(count: int) -> BacktestSeries:
    """A wavy market of ``count`` 5m candles with a trade every 1000 candles."""
    times = [OPEN + timedelta(minutes=5 * (i + 1)) for i in range(count)]
    closes = [Decimal(f"{100 + 10 * math.sin(i / 500):.6f}") for i in range(count)]
    equity = [Decimal(f"{1000 + 50 * math.sin(i / 900):.6f}") for i in range(count)]
    trades = [
        SimTrade(
            side="long" if i % 2000 == 0 else "short",
            quantity=Decimal("1"),
            entry_time=times[i],
            entry_price=closes[i],
            entry_fee=Decimal("0.1"),
            exit_time=times[i + 400],
            exit_price=closes[i + 400],
            pnl=Decimal("1"),
        )
        for i in range(0, count - 500, 1000)
    ]
    return BacktestSeries(
        resolution="5m",
        capital=Decimal("1000"),
        quote="BTC",
        times=times,
        closes=closes,
        equity=equity,
        trades=trades,
    )


def decoded(png: bytes) -> np.ndarray:
    return imread(io.BytesIO(png), format="png")


def colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


def test_png_chart_decodes_to_a_picture_with_content():
    # given the two-trade series
    # when drawn
    png = backtest_chart(series=two_trade_series(), title="SMA crossover")
    # then it is a PNG with lines and markers on it, not a blank page
    assert png.startswith(PNG_SIGNATURE)
    image = decoded(png)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 0.05
    assert colours(image) > 50


def test_svg_chart_is_xml():
    # given
    # when drawn as SVG
    svg = backtest_chart(series=two_trade_series(), fmt="svg")
    # then it parses, with an svg root holding drawn paths
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="jpg"):
        backtest_chart(series=two_trade_series(), fmt="jpg")


def test_an_empty_series_still_renders_a_no_data_picture():
    # given no candle and no trade
    empty = BacktestSeries(resolution="5m", capital=Decimal("1"), quote="BTC")
    # when drawn in both formats
    png = backtest_chart(series=empty)
    svg = backtest_chart(series=empty, fmt="svg")
    # then both are valid pictures, the PNG with some text on it
    assert png.startswith(PNG_SIGNATURE)
    assert decoded(png).std() > 0
    assert ET.fromstring(svg).tag.endswith("svg")


def test_a_title_with_dollar_signs_is_text_not_mathtext():
    # given a strategy name that would be invalid mathtext
    title = r"pump $\undefinedcommand{$ <b>x</b>"
    # when drawn
    png = backtest_chart(series=two_trade_series(), title=title)
    # then it renders
    assert png.startswith(PNG_SIGNATURE)


def test_downsampling_keeps_the_extremes_and_the_ends():
    # given 100k points with one spike up and one down
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000)
    y[31_337], y[77_777] = 50.0, -50.0
    # when downsampled
    dx, dy = downsample(x, y)
    # then
    assert len(dx) <= MAX_POINTS
    assert dy.max() == 50.0 and dy.min() == -50.0
    assert (dx[0], dx[-1]) == (0.0, 99_999.0)
    assert np.all(np.diff(dx) > 0)
    assert np.array_equal(dy, y[dx.astype(int)])


def test_short_lines_are_drawn_as_they_are():
    x, y = np.arange(10.0), np.arange(10.0) ** 2
    dx, dy = downsample(x, y)
    assert np.array_equal(dx, x) and np.array_equal(dy, y)


def test_a_hundred_thousand_candles_draw_quickly_and_compactly():
    # given 100k candles (about a year of 5m)
    series = long_series(100_000)
    # when drawn in both formats
    began = time.perf_counter()
    png = backtest_chart(series=series)
    svg = backtest_chart(series=series, fmt="svg")
    elapsed = time.perf_counter() - began
    # then fast (well under a second each on a laptop; generous for a loaded machine),
    # and the SVG holds the downsampled lines, not 300k vertices
    assert elapsed < 20
    assert decoded(png).std() > 0.05
    assert len(svg) < 1_500_000


def test_charts_drawn_at_once_in_threads_are_the_same_as_one_drawn_alone():
    # given the picture drawn alone
    series = two_trade_series()
    alone = backtest_chart(series=series)
    # when four threads draw it at the same time
    with ThreadPoolExecutor(max_workers=4) as pool:
        drawn = list(pool.map(lambda _: backtest_chart(series=series), range(4)))
    # then no figure leaked into another
    assert all(png == alone for png in drawn)
