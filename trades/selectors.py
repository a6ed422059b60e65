"""Reads on trades: a subscription's history and its performance figures."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from strategies.signals import Signal
from subscriptions.models import StrategySubscription
from trades.models import Order, Position, Trade

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


def position_get_for_subscription(*, subscription: StrategySubscription) -> Position | None:
    """The net position kept in step with fills; None before the subscription's first fill."""
    return Position.objects.filter(subscription=subscription).first()


def _max_drawdown(*, capital: Decimal, pnls: list[Decimal]) -> tuple[Decimal, float]:
    """Largest fall of realized equity from its running peak, absolute and as a fraction."""
    equity = peak = capital
    worst, worst_pct = Decimal("0"), 0.0
    for pnl in pnls:
        equity += pnl
        peak = max(peak, equity)
        fall = peak - equity
        if fall > worst:
            worst = fall
            worst_pct = float(fall / peak) if peak > 0 else 0.0
    return worst, worst_pct


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
    drawdown, drawdown_pct = _max_drawdown(capital=subscription.capital, pnls=closed_pnls)
    # The subscription's counters are what the trade services accumulate atomically.
    realized = subscription.realized_pnl
    return {
        "subscription_id": subscription.pk,
        "trades": trades.filter(status__in=MARKET_STATUSES).count(),
        "closed_trades": len(closed_pnls),
        "wins": wins,
        "losses": losses,
        "win_rate": wins / len(closed_pnls) if closed_pnls else None,
        "realized_pnl": realized,
        "fees": subscription.fees_paid,
        "return_on_capital": float(realized / subscription.capital),
        "max_drawdown": drawdown,
        "max_drawdown_pct": drawdown_pct,
        "open_position": _open_position(subscription),
        "position": position_get_for_subscription(subscription=subscription),
    }
