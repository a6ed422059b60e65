"""What a subscriber hears of a batch's results: a fill, a close, a rejected order.

Built from the subscriber's own rows only (their trade, their order, their subscription):
never a key or a secret, never another subscriber's data. Recorded by ``orders_record`` in
the transaction that records the results, so each notice exists exactly when its result does
(and once: its key names the trade or the order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from markets.symbols import symbol_quote
from notifications.models import NotificationEvent
from notifications.services import Notice

if TYPE_CHECKING:
    from subscriptions.models import StrategySubscription
    from trades.models import Trade
    from trades.orders import Leg


def _trade(leg: Leg) -> dict[str, Any]:
    return _trade_of(leg.subscription, leg.trade)


def _trade_of(subscription: StrategySubscription, trade: Trade) -> dict[str, Any]:
    return {
        "subscription_id": subscription.pk,
        "strategy_id": subscription.strategy_id,
        "mode": subscription.mode,
        "trade_id": trade.pk,
        "symbol": trade.symbol,
        "side": trade.side,
        "quantity": trade.quantity,
        "currency": symbol_quote(trade.symbol),
    }


def _notice(leg: Leg, event: NotificationEvent, key: str, payload: dict[str, Any]) -> Notice:
    return Notice(user_id=leg.subscription.user_id, event=event, key=key, payload=payload)


def fill_notice(leg: Leg) -> Notice:
    return entry_fill_notice(subscription=leg.subscription, trade=leg.trade)


def entry_fill_notice(*, subscription: StrategySubscription, trade: Trade) -> Notice:
    payload = {
        **_trade_of(subscription, trade),
        "price": trade.entry_price,
        "fee": trade.entry_fee,
        "time": trade.entry_time,
    }
    return Notice(
        user_id=subscription.user_id,
        event=NotificationEvent.TRADE_FILLED,
        key=f"trade.filled:{trade.pk}",
        payload=payload,
    )


def close_notice(leg: Leg) -> Notice:
    return trade_close_notice(
        subscription=leg.subscription, trade=leg.trade, reason=leg.exit_reason
    )


def trade_close_notice(*, subscription: StrategySubscription, trade: Trade, reason: str) -> Notice:
    payload = {
        **_trade_of(subscription, trade),
        "entry_price": trade.entry_price,
        "exit_price": trade.exit_price,
        "fees": trade.fees,
        "pnl": trade.pnl,
        "reason": reason,
        "time": trade.exit_time,
    }
    return Notice(
        user_id=subscription.user_id,
        event=NotificationEvent.TRADE_CLOSED,
        key=f"trade.closed:{trade.pk}",
        payload=payload,
    )


def rejection_notice(leg: Leg) -> Notice:
    order = leg.order
    payload = {
        **_trade(leg),
        "order_id": order.pk,
        "purpose": str(order.purpose),
        "client_order_id": order.client_order_id,
        "order_side": order.side,
        "amount": order.amount,
        "reason": order.error,
    }
    return _notice(leg, NotificationEvent.ORDER_REJECTED, f"order.rejected:{order.pk}", payload)
