import base64
import re
from decimal import Decimal
from html.parser import HTMLParser

from backtests.metrics import backtest_metrics
from backtests.report import backtest_report_html
from backtests.results import BacktestSeries, Skip
from tests.backtests.test_metrics import two_trade_series

HOSTILE = '<script>alert("x")</script>'
DETAILS = {
    "strategy": "SMA crossover v3",
    "market": "binance ETH/BTC 5m",
    "period": "2024-01-01 00:00 to 00:25 UTC",
    "sizing": "1 % risk per trade, leverage 1",
    "costs": "fees 10 bps, slippage 5 bps",
}


class Cells(HTMLParser):
    """The text of every table row, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rows_of(html: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(html)
    return parser.rows


def report(series: BacktestSeries, **overrides) -> str:
    arguments = {
        "series": series,
        "metrics": backtest_metrics(series=series),
        "title": "SMA crossover on ETH/BTC",
        "details": DETAILS,
        "warnings": [],
    }
    return backtest_report_html(**{**arguments, **overrides})


def test_the_report_shows_the_details_and_key_figures_with_units():
    # given the two-trade series
    # when reported
    html = report(two_trade_series())
    rows = rows_of(html)
    # then
    assert "<h1>SMA crossover on ETH/BTC</h1>" in html
    assert ["market", "binance ETH/BTC 5m"] in rows
    assert ["costs", "fees 10 bps, slippage 5 bps"] in rows
    assert ["Net return", "0.54 %"] in rows
    assert ["Buy and hold return (first to last close)", "8 %"] in rows
    assert ["Final equity", "1005.4 BTC"] in rows
    assert ["Win rate", "50 %"] in rows
    assert ["Profit factor (gross profit / gross loss)", "2.2273"] in rows
    assert ["Expectancy (net PnL per closed trade)", "2.7 BTC"] in rows
    assert ["Longest time under water", "10 min"] in rows
    assert ["Average holding time", "7 min 30 s"] in rows
    assert ["CAGR (annualised return)", "n/a"] in rows


def test_the_report_lists_every_trade():
    # given
    # when reported
    rows = rows_of(report(two_trade_series()))
    # then one row per trade: times, side, prices, quantity, fees, PnL, exit reason
    assert [
        "1", "long", "2024-01-01 00:05:00 UTC", "100", "2024-01-01 00:10:00 UTC", "110",
        "1", "0.2", "9.8", "exit signal",
    ] in rows  # fmt: skip
    assert [
        "2", "short", "2024-01-01 00:10:00 UTC", "110", "2024-01-01 00:20:00 UTC", "112",
        "2", "0.4", "-4.4", "stop loss",
    ] in rows  # fmt: skip


def test_skipped_signals_are_counted_by_reason():
    # given two skips for one reason and one for another
    # when reported
    html = report(two_trade_series())
    rows = rows_of(html)
    # then the most frequent reason comes first
    header = rows.index(["reason", "signals skipped"])
    assert rows[header + 1 :] == [["already in a position", "2"], ["quantity rounds to zero", "1"]]
    assert "Skipped signals (3)" in html


def test_warnings_come_before_the_figures():
    # given a gap in the data and look-ahead found
    warnings = ["3 candles missing on 2024-01-01", "look-ahead bias: signal changed at 00:15"]
    # when reported
    html = report(two_trade_series(), warnings=warnings)
    # then they are shown, in an alert box above everything else
    box = html.index('<div class="warnings" role="alert">')
    assert box < html.index("<h2>Figures</h2>") and box < html.index("<h2>Backtest</h2>")
    assert all(f"<li>{warning}</li>" in html for warning in warnings)


def test_without_warnings_there_is_no_alert_box():
    html = report(two_trade_series(), warnings=[])
    assert 'class="warnings"' not in html


def test_hostile_text_is_escaped_everywhere():
    # given script tags in the title, metadata, a warning, an exit reason and a skip reason
    series = two_trade_series()
    series.trades[0].exit_reason = HOSTILE
    series.skips.append(Skip(time=series.times[0], signal=HOSTILE, reason=HOSTILE))
    # when reported
    html = report(
        series,
        title=HOSTILE,
        details={HOSTILE: HOSTILE, "strategy": "<img src=x onerror=alert(1)>"},
        warnings=[HOSTILE],
    )
    # then no markup got through, only its escaped text
    assert "<script" not in html.lower()
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert html.count("&lt;script&gt;") >= 6  # title twice, detail key and value, warning...


def test_the_report_is_self_contained():
    # given
    # when reported
    html = report(two_trade_series())
    # then nothing is fetched from anywhere: the chart is an embedded PNG, the CSS inline
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html
    assert "<style>" in html
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)).startswith(b"\x89PNG\r\n\x1a\n")


def test_an_empty_backtest_still_reports():
    # given no candle, no trade, no skip
    series = BacktestSeries(resolution="5m", capital=Decimal("1000"), quote="BTC")
    # when reported
    html = report(series, details={})
    # then
    assert "No trades." in html
    assert "Every signal was acted on." in html
    assert ["Candles", "0"] in rows_of(html)
    assert "data:image/png;base64," in html


def test_an_open_trade_shows_as_open():
    # given the last trade never closed
    series = two_trade_series()
    last = series.trades[-1]
    last.exit_time, last.exit_price, last.exit_fee, last.pnl = None, None, Decimal("0"), None
    last.exit_reason = ""
    # when reported
    rows = rows_of(report(series))
    # then
    open_row = next(row for row in rows if row[:2] == ["2", "short"])
    assert open_row[4] == "open"
    assert open_row[-1] == "still open"


def test_figures_the_table_does_not_know_are_still_shown():
    # given stored metrics with an extra figure
    series = two_trade_series()
    metrics = {**backtest_metrics(series=series), "ulcer_index": "0.42"}
    # when reported
    rows = rows_of(report(series, metrics=metrics))
    # then
    assert ["ulcer_index", "0.42"] in rows
