"""Reads on trades: a subscription's history and its performance figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from markets.symbols import symbol_quote
from strategies.signals import Signal
from subscriptions.models import EquityPoint, StrategySubscription
from trades.models import Divergence, Order, Position, ProtectionTrip, Trade
from trades.report import subscription_divergence_report

MARKET_STATUSES = (Trade.Status.OPEN, Trade.Status.CLOSED)


def fanout_targets(*, strategy_id: int, signal: Signal) -> list[int]:
    """The subscriptions a signal of the strategy reaches, in id order."""
    if signal.type.is_entry:
        active = StrategySubscription.objects.filter(
            strategy_id=strategy_id, status=StrategySubscription.Status.ACTIVE
        )
        return list(active.order_by("id").values_list("id", flat=True))
    if signal.type.is_exit:
        # Exits reach every subscriber still holding that side, paused ones included:
        # pausing stops new entries, it must not strand an open position.
        side = Trade.Side.LONG if signal.type == "EXIT_LONG" else Trade.Side.SHORT
        holders = Trade.objects.filter(
            execution__strategy_id=strategy_id, status=Trade.Status.OPEN, side=side
        )
        return sorted(set(holders.values_list("subscription_id", flat=True)))
    return []


def trade_list_for_subscription(*, subscription: StrategySubscription) -> QuerySet[Trade]:
    return Trade.objects.filter(subscription=subscription).order_by("-created_at", "-id")


def order_list_for_subscription(*, subscription: StrategySubscription) -> QuerySet[Order]:
    return Order.objects.filter(subscription=subscription).order_by("-created_at", "-id")


def protection_trips_for_subscription(
    *, subscription: StrategySubscription
) -> QuerySet[ProtectionTrip]:
    return ProtectionTrip.objects.filter(subscription=subscription).order_by("-created_at", "-id")


def divergence_list_for_subscription(*, subscription: StrategySubscription) -> QuerySet[Divergence]:
    return (
        Divergence.objects.filter(subscription=subscription)
        .select_related("resync_by", "resync_order")
        .order_by("-last_seen_at", "-id")
    )


def position_get_for_subscription(*, subscription: StrategySubscription) -> Position | None:
    """The net position kept in step with fills; None before the subscription's first fill."""
    return Position.objects.filter(subscription=subscription).first()


def equity_points_for_subscription(
    *,
    subscription: StrategySubscription,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[EquityPoint]:
    points = EquityPoint.objects.filter(subscription=subscription)
    if start is not None:
        points = points.filter(time__gte=start)
    if end is not None:
        points = points.filter(time__lte=end)
    return points.order_by("time", "id")


def equity_series(
    *,
    subscription: StrategySubscription,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: timedelta | None = None,
) -> list[EquityPoint]:
    """The stored curve; with ``resolution``, the last point of each bucket (buckets counted
    from the epoch, so ``1d`` buckets are UTC days)."""
    points = list(equity_points_for_subscription(subscription=subscription, start=start, end=end))
    if resolution is None:
        return points
    step = resolution.total_seconds()
    last: dict[int, EquityPoint] = {}
    for point in points:
        last[int(point.time.timestamp() // step)] = point  # later points overwrite
    return list(last.values())


def subscription_currency(*, subscription: StrategySubscription) -> str:
    """What the subscription's money is counted in: its strategy's quote currency."""
    return symbol_quote(subscription.strategy.symbol)


@dataclass(frozen=True)
class CurveFigures:
    return_pct: float | None  # time-weighted; None once equity reached zero
    max_drawdown: Decimal  # largest fall of PnL (equity less capital) from its peak
    max_drawdown_pct: float  # largest fall of the time-weighted index, in percent of its peak


def curve_figures(points: Sequence[EquityPoint]) -> CurveFigures:
    """Return and drawdown of a stored curve, measured on the capital in force at each time.

    Each step's growth is (equity - the capital added at that step) / the previous equity:
    a capital change is neither a gain nor a loss, and the returns before it stay as earned.
    """
    index = peak_index = Decimal(1)
    worst_pct = Decimal(0)
    worst = Decimal(0)
    pnl_peak: Decimal | None = None
    broke = False
    for prev, point in zip([None, *points], points, strict=False):
        pnl = point.equity - point.capital
        pnl_peak = pnl if pnl_peak is None else max(pnl_peak, pnl)
        worst = max(worst, pnl_peak - pnl)
        if prev is None or broke:
            continue
        if prev.equity <= 0:
            broke = True
            continue
        index *= (point.equity - (point.capital - prev.capital)) / prev.equity
        peak_index = max(peak_index, index)
        worst_pct = max(worst_pct, 1 - index / peak_index)
    return CurveFigures(
        return_pct=None if broke else float((index - 1) * 100),
        max_drawdown=worst,
        max_drawdown_pct=float(worst_pct * 100),
    )


def _open_position(subscription: StrategySubscription) -> dict[str, Any] | None:
    trade = (
        Trade.objects.filter(subscription=subscription, status=Trade.Status.OPEN)
        .order_by("-created_at", "-id")
        .first()
    )
    if trade is None:
        return None
    return {
        "trade_id": trade.pk,
        "side": trade.side,
        "symbol": trade.symbol,
        "quantity": trade.quantity,
        "entry_price": trade.entry_price,
        "entry_time": trade.entry_time,
        "stop_loss": trade.stop_loss,
        "take_profit": trade.take_profit,
    }


def subscription_stats(*, subscription: StrategySubscription) -> dict[str, Any]:
    trades = Trade.objects.filter(subscription=subscription)
    closed_pnls = [
        pnl
        for pnl in trades.filter(status=Trade.Status.CLOSED, pnl__isnull=False)
        .order_by("exit_time", "id")
        .values_list("pnl", flat=True)
        if pnl is not None
    ]
    wins = sum(1 for pnl in closed_pnls if pnl > 0)
    losses = sum(1 for pnl in closed_pnls if pnl < 0)
    # In the order they were written: a replay of past candles writes closes older than the
    # capital change of subscribing, and the figures must follow what happened, in turn.
    points = list(EquityPoint.objects.filter(subscription=subscription).order_by("id"))
    curve = curve_figures(points)
    # The subscription's counters are what the trade services accumulate atomically.
    realized = subscription.realized_pnl
    return {
        "subscription_id": subscription.pk,
        "currency": subscription_currency(subscription=subscription),
        "trades": trades.filter(status__in=MARKET_STATUSES).count(),
        "closed_trades": len(closed_pnls),
        "wins": wins,
        "losses": losses,
        "win_rate": wins / len(closed_pnls) if closed_pnls else None,
        "realized_pnl": realized,
        "fees": subscription.fees_paid,
        "capital": subscription.capital,
        "equity": points[-1].equity if points else subscription.capital,
        "return_pct": curve.return_pct,
        "max_drawdown": curve.max_drawdown,
        "max_drawdown_pct": curve.max_drawdown_pct,
        "open_position": _open_position(subscription),
        "position": position_get_for_subscription(subscription=subscription),
        "divergence": subscription_divergence_report(subscription=subscription)["summary"],
    }
