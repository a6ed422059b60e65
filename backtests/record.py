"""A strategy's track record: a reference paper account following every real-time signal.

The record must not depend on who subscribed: it follows every real-time close of the strategy
from its first execution with unit capital (1 in the quote currency), risk 0.01, leverage 1
and the platform's paper costs, on the backtest engine (the rules paper trading uses). The
pipeline feeds it after each execution (``record_follow``); a close older than the last one
followed is ignored, so replays and manual runs of past candles never rewrite it.

``Account`` lives in memory: its state (the open position, realized PnL) is restored from the
``StrategyRecord`` and saved back at each close; the equity points go to one row per UTC day.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from backtests.engine import Account, Bar, Sizing
from backtests.metrics import backtest_metrics
from backtests.models import StrategyRecord, StrategyRecordDay
from backtests.results import BacktestSeries, SimTrade
from core.time_utils import datetime_to_ms, ms_to_datetime, resolution_to_timedelta
from markets.symbols import symbol_quote
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import REALTIME_TRIGGERS
from subscriptions.models import StrategySubscription
from trades.brokers import PaperBroker

CAPITAL = Decimal("1")
RISK_PER_TRADE = Decimal("0.01")
LEVERAGE = Decimal("1")
HUNDRED = Decimal("100")
PCT_STEP = Decimal("0.0001")
WINDOWS = {"return_7d_pct": 7, "return_30d_pct": 30, "return_90d_pct": 90}
# The strategy acted on these: its signal is applied. Other finished executions that read the
# closed candle (failed, warming up) still move stops and the valuation.
ACTED = (StrategyExecution.Status.SUCCESS, StrategyExecution.Status.NO_SIGNAL)
DECIMAL_FIELDS = {
    "quantity",
    "entry_price",
    "entry_fee",
    "stop_loss",
    "take_profit",
    "exit_price",
    "exit_fee",
    "pnl",
}
TIME_FIELDS = {"entry_time", "exit_time"}


# --- following the strategy ------------------------------------------------------------------
def record_follow(*, execution: StrategyExecution, candle: list[float]) -> bool:
    """Follow one real-time close (its candle as the store holds it) on the strategy's record.

    Returns whether the record moved: False for a trigger that is not real time or a close
    not newer than the last one followed."""
    if execution.trigger not in REALTIME_TRIGGERS:
        return False
    strategy = execution.strategy
    step_ms = int(resolution_to_timedelta(strategy.resolution).total_seconds() * 1000)
    bar = Bar.from_row(candle, step_ms=step_ms)
    with transaction.atomic():
        StrategyRecord.objects.get_or_create(strategy=strategy)
        record = StrategyRecord.objects.select_for_update().get(strategy=strategy)
        if record.last_close is not None and bar.close_time <= record.last_close:
            return False
        closed, equity = _step(record, strategy, execution, bar)
        _append_day(record, bar, equity=equity, closed=closed)
    return True


def _step(
    record: StrategyRecord, strategy: Strategy, execution: StrategyExecution, bar: Bar
) -> tuple[list[SimTrade], Decimal]:
    """The pipeline's order at one close: stops, the signal, the valuation; returns the
    trades this close closed and the equity at the close."""
    account = _account(record, strategy)
    held = account.position
    account.check_stops(bar)
    if execution.status in ACTED:
        account.apply(execution.signal or {"signal": "HOLD"}, bar)
    account.mark(bar)
    candidates = [held, *account.series.trades] if held is not None else account.series.trades
    record.position = trade_json(account.position) if account.position else None
    record.realized = account.realized
    record.started_at = record.started_at or bar.close_time
    record.last_close = bar.close_time
    record.save(update_fields=["position", "realized", "started_at", "last_close"])
    return [trade for trade in candidates if not trade.is_open], account.series.equity[-1]


def _account(record: StrategyRecord, strategy: Strategy) -> Account:
    series = BacktestSeries(
        resolution=strategy.resolution, capital=CAPITAL, quote=symbol_quote(strategy.symbol)
    )
    broker = PaperBroker(fee_bps=settings.PAPER_FEE_BPS, slippage_bps=settings.PAPER_SLIPPAGE_BPS)
    sizing = Sizing(CAPITAL, RISK_PER_TRADE, LEVERAGE)
    account = Account(sizing=sizing, broker=broker, series=series)
    account.resume(
        position=trade_from_json(record.position) if record.position else None,
        realized=record.realized,
    )
    return account


def _append_day(
    record: StrategyRecord, bar: Bar, *, equity: Decimal, closed: list[SimTrade]
) -> None:
    day, _ = StrategyRecordDay.objects.get_or_create(record=record, day=bar.close_time.date())
    day.times.append(datetime_to_ms(bar.close_time))
    day.closes.append(f"{bar.close:f}")
    day.equity.append(f"{equity:f}")
    day.trades.extend(trade_json(trade) for trade in closed)
    day.save(update_fields=["times", "closes", "equity", "trades"])


def trade_json(trade: SimTrade) -> dict[str, Any]:
    """A SimTrade as JSON: Decimals as strings, times ISO 8601."""
    data = dataclasses.asdict(trade)
    for name, value in data.items():
        if isinstance(value, Decimal):
            data[name] = f"{value:f}"
        elif isinstance(value, datetime):
            data[name] = value.isoformat()
    return data


def trade_from_json(data: dict[str, Any]) -> SimTrade:
    values = dict(data)
    for name in DECIMAL_FIELDS:
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    for name in TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return SimTrade(**values)


# --- reading it --------------------------------------------------------------------------------
def record_get(*, strategy: Strategy) -> StrategyRecord | None:
    return StrategyRecord.objects.filter(strategy=strategy).first()


def record_series(*, record: StrategyRecord, since: date | None = None) -> BacktestSeries:
    """The record as a backtest's series: every close followed, closed trades, the open one."""
    strategy = record.strategy
    series = BacktestSeries(
        resolution=strategy.resolution, capital=CAPITAL, quote=symbol_quote(strategy.symbol)
    )
    days = record.days.all() if since is None else record.days.filter(day__gte=since)
    for day in days:
        series.times += [ms_to_datetime(int(ms)) for ms in day.times]
        series.closes += [Decimal(close) for close in day.closes]
        series.equity += [Decimal(value) for value in day.equity]
        series.trades += [trade_from_json(trade) for trade in day.trades]
    series.trades.sort(key=lambda trade: trade.entry_time)
    if record.position:
        series.trades.append(trade_from_json(record.position))
    return series


def record_figures(
    *, record: StrategyRecord, series: BacktestSeries, now: datetime
) -> dict[str, Any]:
    """The listing's figures of a record, from its whole series."""
    metrics = backtest_metrics(series=series)
    return {
        **{name: _window_return(series, now - timedelta(days=n)) for name, n in WINDOWS.items()},
        "return_total_pct": _pct(series.equity[-1] / CAPITAL - 1) if series.equity else None,
        "max_drawdown_pct": _decimal(metrics["max_drawdown_pct"]) if series.equity else None,
        "sharpe": metrics["sharpe"],
        "win_rate_pct": _decimal(metrics["win_rate_pct"]),
        "trades": metrics["trades"],
        "subscribers": StrategySubscription.objects.filter(
            strategy_id=record.strategy_id, status=StrategySubscription.Status.ACTIVE
        ).count(),
    }


def _window_return(series: BacktestSeries, start: datetime) -> Decimal | None:
    """Return from the equity at ``start`` (the capital if the record began later) to now."""
    if not series.equity:
        return None
    base = CAPITAL
    for time, equity in zip(series.times, series.equity, strict=True):
        if time > start:
            break
        base = equity
    return _pct(series.equity[-1] / base - 1) if base > 0 else None


def _pct(fraction: Decimal) -> Decimal:
    return (fraction * HUNDRED).quantize(PCT_STEP)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# --- refreshing the listing's figures ----------------------------------------------------------
def record_refresh(*, record: StrategyRecord, now: datetime | None = None) -> dict[str, Any]:
    """Recompute and store a record's figures; returns them with its series."""
    series = record_series(record=record)
    figures = record_figures(record=record, series=series, now=now or timezone.now())
    for name, value in figures.items():
        setattr(record, name, value)
    record.figures_at = timezone.now()
    record.save(update_fields=[*figures, "figures_at"])
    return {"figures": figures, "series": series}


def records_refresh() -> int:
    """Refresh every record's figures (the periodic task); returns how many."""
    count = 0
    for record in StrategyRecord.objects.select_related("strategy").iterator():
        record_refresh(record=record)
        count += 1
    return count


# --- what subscribers made, in return terms only -----------------------------------------------
def subscribers_realized(*, strategy: Strategy) -> dict[str, dict[str, Any]]:
    """Per mode (live, paper): how many subscriptions, and their realized PnL over their
    capital as a percentage. No one subscriber's capital, PnL or identity is given."""
    rows = (
        StrategySubscription.objects.filter(strategy=strategy)
        .values("mode")
        .annotate(n=Count("id"), realized=Sum("realized_pnl"), capital=Sum("capital"))
        .order_by()
    )
    by_mode = {row["mode"]: row for row in rows}
    return {mode: _mode_figures(by_mode.get(mode)) for mode in StrategySubscription.Mode.values}


def _mode_figures(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None or not row["capital"]:
        return {"subscriptions": 0, "realized_return_pct": None}
    return {
        "subscriptions": row["n"],
        "realized_return_pct": f"{_pct(Decimal(row['realized'] or 0) / Decimal(row['capital'])):f}",
    }


# --- the performance payload -------------------------------------------------------------------
def strategy_performance(*, strategy: Strategy, resolution: str | None = None) -> dict[str, Any]:
    """A strategy's record as the API shows it: figures (refreshed now), the equity curve at
    ``resolution`` (the strategy's own by default), and its subscribers' realized returns."""
    record = record_get(strategy=strategy)
    quote = symbol_quote(strategy.symbol)
    figures: dict[str, Any] = {}
    series = None
    if record is not None:
        refreshed = record_refresh(record=record)
        figures, series = refreshed["figures"], refreshed["series"]
    return {
        "strategy_id": strategy.pk,
        "currency": quote,
        "units": {
            "equity": f"{quote}, from a capital of {CAPITAL} {quote}",
            "returns": "percent",
            "sharpe": "annualised, per-close returns, risk-free rate 0",
        },
        "reference_account": {
            "capital": f"{CAPITAL}",
            "risk_per_trade": f"{RISK_PER_TRADE}",
            "leverage": f"{LEVERAGE}",
            "fee_bps": f"{settings.PAPER_FEE_BPS}",
            "slippage_bps": f"{settings.PAPER_SLIPPAGE_BPS}",
        },
        "started_at": _iso(record.started_at if record else None),
        "last_close": _iso(record.last_close if record else None),
        "figures": {name: _plain(value) for name, value in figures.items()},
        "equity": _curve(series, resolution or strategy.resolution),
        "subscribers": subscribers_realized(strategy=strategy),
    }


def _curve(series: BacktestSeries | None, resolution: str) -> dict[str, Any]:
    """The last point of each ``resolution`` bucket (a close's equity stays the bucket's)."""
    if series is None:
        return {"resolution": resolution, "times": [], "equity": []}
    bucket_ms = int(resolution_to_timedelta(resolution).total_seconds() * 1000)
    points: dict[int, tuple[datetime, Decimal]] = {}
    for time, value in zip(series.times, series.equity, strict=True):
        # Keyed by the bucket holding the close (a close on a boundary ends the bucket before).
        points[(datetime_to_ms(time) - 1) // bucket_ms] = (time, value)
    ordered = [points[key] for key in sorted(points)]
    return {
        "resolution": resolution,
        "times": [time.isoformat() for time, _ in ordered],
        "equity": [f"{value:f}" for _, value in ordered],
    }


def record_chart_series(*, strategy: Strategy) -> BacktestSeries:
    """What the record's chart draws (an empty series before the first close)."""
    record = record_get(strategy=strategy)
    if record is None:
        return BacktestSeries(
            resolution=strategy.resolution, capital=CAPITAL, quote=symbol_quote(strategy.symbol)
        )
    return record_series(record=record)


def _plain(value: Any) -> Any:
    return f"{value:f}" if isinstance(value, Decimal) else value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
