"""A backtest as one self-contained HTML file: nothing fetched, nothing executed.

The chart is embedded as a base64 PNG (an inline SVG would carry its namespace URL), the CSS
is inline, and every piece of text is escaped: strategy metadata, exit and skip reasons come
from user code and are treated as hostile.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import Any

from backtests.charts import backtest_chart
from backtests.results import BacktestSeries, SimTrade, Skip

MISSING = "n/a"

# (key, label, unit): unit says how the JSON value reads (see backtests.metrics).
METRIC_SECTIONS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "Returns",
        (
            ("net_return_pct", "Net return", "pct"),
            ("buy_and_hold_return_pct", "Buy and hold return (first to last close)", "pct"),
            ("cagr_pct", "CAGR (annualised return)", "pct"),
            ("final_equity", "Final equity", "money"),
            ("capital", "Starting capital", "money"),
            ("fees_paid", "Fees paid", "money"),
        ),
    ),
    (
        "Risk",
        (
            ("max_drawdown_pct", "Max drawdown (of the peak)", "pct"),
            ("max_drawdown_start", "Max drawdown from (peak)", "time"),
            ("max_drawdown_end", "Max drawdown to (trough)", "time"),
            ("max_drawdown_duration_s", "Longest time under water", "duration"),
            ("sharpe", "Sharpe ratio", "ratio"),
            ("sortino", "Sortino ratio", "ratio"),
            ("calmar", "Calmar ratio (CAGR / max drawdown)", "ratio"),
            ("annualisation", "Annualisation", "text"),
        ),
    ),
    (
        "Trades",
        (
            ("trades", "Closed trades", "count"),
            ("open_trades", "Open at the end", "count"),
            ("wins", "Winning trades", "count"),
            ("losses", "Losing trades", "count"),
            ("win_rate_pct", "Win rate", "pct"),
            ("profit_factor", "Profit factor (gross profit / gross loss)", "ratio"),
            ("expectancy", "Expectancy (net PnL per closed trade)", "money"),
            ("gross_profit", "Gross profit", "money"),
            ("gross_loss", "Gross loss", "money"),
            ("avg_holding_s", "Average holding time", "duration"),
            ("longest_holding_s", "Longest holding time", "duration"),
            ("exposure_pct", "Exposure (candles with a position open)", "pct"),
        ),
    ),
    (
        "Period",
        (
            ("start", "Start", "time"),
            ("end", "End", "time"),
            ("candles", "Candles", "count"),
        ),
    ),
)
KNOWN_KEYS = {key for _, rows in METRIC_SECTIONS for key, _, _ in rows} | {"currency"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.section th { background: #e8eef7; }
.warnings { background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px;
            padding: 0.6em 1.2em; margin: 1em 0; }
.warnings h2 { margin-top: 0.3em; border: none; color: #8a5a00; }
.gain { color: #1a7f37; }
.loss { color: #c62828; }
.muted { color: #777; }
img.chart { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def backtest_report_html(
    *,
    series: BacktestSeries,
    metrics: dict[str, Any],
    title: str,
    details: dict[str, str],
    warnings: list[str],
) -> str:
    """The whole report: title, warnings, details, chart, figures, trades and skipped signals."""
    currency = str(metrics.get("currency") or series.quote)
    body = [
        f"<h1>{escape(title)}</h1>",
        _warnings_html(warnings),
        _section("Backtest", _details_html(details)),
        _section("Chart", _chart_html(series)),
        _section("Figures", _metrics_html(metrics, currency=currency)),
        _section(f"Trades ({len(series.trades)})", _trades_html(series.trades, currency)),
        _section(f"Skipped signals ({len(series.skips)})", _skips_html(series.skips)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


def _section(heading: str, content: str) -> str:
    return f"<section>\n<h2>{escape(heading)}</h2>\n{content}\n</section>"


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(warning)}</li>" for warning in warnings)
    return f'<div class="warnings" role="alert">\n<h2>Warnings</h2>\n<ul>{items}</ul>\n</div>'


def _details_html(details: dict[str, str]) -> str:
    if not details:
        return '<p class="muted">No details given.</p>'
    rows = (
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in details.items()
    )
    return _table(rows)


def _chart_html(series: BacktestSeries) -> str:
    png = base64.b64encode(backtest_chart(series=series, fmt="png")).decode("ascii")
    return (
        f'<img class="chart" alt="close price with trades, equity and drawdown" '
        f'src="data:image/png;base64,{png}">'
    )


def _metrics_html(metrics: dict[str, Any], *, currency: str) -> str:
    rows: list[str] = []
    for heading, entries in METRIC_SECTIONS:
        rows.append(f'<tr class="section"><th colspan="2">{escape(heading)}</th></tr>')
        for key, label, unit in entries:
            if key in metrics:
                text = _metric_text(metrics[key], unit, currency)
                rows.append(_metric_row(label, text, numeric=unit != "text"))
    # Figures added later than this table still show, under their own names.
    others = [key for key in metrics if key not in KNOWN_KEYS]
    if others:
        rows.append('<tr class="section"><th colspan="2">Other</th></tr>')
        rows.extend(
            _metric_row(str(key), _metric_text(metrics[key], "text", ""), numeric=False)
            for key in others
        )
    return _table(rows)


def _metric_row(label: str, value: str, *, numeric: bool) -> str:
    return f"<tr><th>{escape(label)}</th>{_cell(value, 'num' if numeric else '')}</tr>"


def _metric_text(value: Any, unit: str, currency: str) -> str:
    if value is None or value == "":
        return MISSING
    try:
        return _unit_text(value, unit, currency)
    except (TypeError, ValueError):
        return str(value)  # a stored figure of an unexpected shape: shown as it is


def _unit_text(value: Any, unit: str, currency: str) -> str:
    if unit == "pct":
        return f"{value} %"
    if unit == "money":
        return f"{value} {currency}"
    if unit == "duration":
        return _duration_text(int(value))
    if unit == "time":
        return _time_text(datetime.fromisoformat(str(value)))
    return str(value)


def _duration_text(seconds: int) -> str:
    """The two largest units, e.g. "2 d 3 h", "15 min", "40 s"."""
    parts = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts[:2]) or "0 s"


def _time_text(value: datetime | None) -> str:
    if value is None:
        return MISSING
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _trades_html(trades: list[SimTrade], currency: str) -> str:
    if not trades:
        return '<p class="muted">No trades.</p>'
    head = (
        "<tr><th>#</th><th>side</th><th>entry time</th><th>entry price</th><th>exit time</th>"
        f"<th>exit price</th><th>quantity</th><th>fees ({escape(currency)})</th>"
        f"<th>PnL ({escape(currency)})</th><th>exit reason</th></tr>"
    )
    return _table([head, *(_trade_row(i, trade) for i, trade in enumerate(trades, start=1))])


def _trade_row(number: int, trade: SimTrade) -> str:
    cells = [
        _cell(str(number), "num"),
        _cell(trade.side),
        _cell(_time_text(trade.entry_time), "num"),
        _cell(_number(trade.entry_price), "num"),
        _cell(_time_text(trade.exit_time) if trade.exit_time else "open", "num"),
        _cell(_number(trade.exit_price), "num"),
        _cell(_number(trade.quantity), "num"),
        _cell(_number(trade.entry_fee + trade.exit_fee), "num"),
        _cell(_number(trade.pnl), f"num {_pnl_class(trade.pnl)}".strip()),
        _cell(trade.exit_reason or ("still open" if trade.is_open else "")),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _pnl_class(pnl: Decimal | None) -> str:
    if pnl is None or pnl == 0:
        return ""
    return "gain" if pnl > 0 else "loss"


def _skips_html(skips: list[Skip]) -> str:
    if not skips:
        return '<p class="muted">Every signal was acted on.</p>'
    counts = Counter(skip.reason for skip in skips)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    rows = [
        "<tr><th>reason</th><th>signals skipped</th></tr>",
        *(f"<tr>{_cell(reason)}{_cell(str(count), 'num')}</tr>" for reason, count in ordered),
    ]
    return _table(rows)


def _cell(text: str, css_class: str = "") -> str:
    attribute = f' class="{escape(css_class)}"' if css_class else ""
    return f"<td{attribute}>{escape(text)}</td>"


def _number(value: Decimal | None) -> str:
    if value is None:
        return ""
    return format(value.normalize() if value else Decimal(0), "f")


def _table(rows: Iterable[str]) -> str:
    return "<table>\n" + "\n".join(rows) + "\n</table>"
