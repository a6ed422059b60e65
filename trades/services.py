"""Per-subscriber order work: entries, exits, stops, and the fan-out that drives them.

Exactly-once rests on the database: an entry is a Trade unique per (execution, subscription),
written as a pending intent before any order is sent, with a client order id derived from
both ids; an exit is claimed with a conditional UPDATE before its order is sent. A retry or a
redelivered task finds the intent and carries on with the same client order id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from execution.events import EventType, event_emit
from execution.models import StrategyExecution
from execution.signal_validation import Signal, SignalType
from subscriptions.models import StrategySubscription
from trades.brokers import BrokerUnavailable, OrderRequest, broker_for
from trades.models import Trade
from trades.sizing import position_quantity, realized_pnl

logger = logging.getLogger(__name__)

ENTRY_SIDE = {SignalType.LONG: Trade.Side.LONG, SignalType.SHORT: Trade.Side.SHORT}
EXIT_SIDE = {SignalType.EXIT_LONG: Trade.Side.LONG, SignalType.EXIT_SHORT: Trade.Side.SHORT}
OPPOSITE = {Trade.Side.LONG: Trade.Side.SHORT, Trade.Side.SHORT: Trade.Side.LONG}


def client_order_id(*, execution_id: int, subscription_id: int, purpose: str) -> str:
    """Deterministic, so a resent order is recognised by the exchange as the same order."""
    return f"sf-{execution_id}-{subscription_id}-{purpose}"


@dataclass(frozen=True)
class FanoutOutcome:
    processed: int
    opened: int
    closed: int
    failed: int


def _open_trades(subscription: StrategySubscription, side: str | None = None) -> list[Trade]:
    trades = Trade.objects.filter(subscription=subscription, status=Trade.Status.OPEN)
    return list(trades.filter(side=side) if side else trades)


def _entry_intent(
    *, execution: StrategyExecution, subscription: StrategySubscription, signal: Signal
) -> tuple[Trade, bool]:
    try:
        with transaction.atomic():
            trade = Trade.objects.create(
                subscription=subscription,
                execution=execution,
                symbol=execution.strategy.symbol,
                side=ENTRY_SIDE[signal.type],
                stop_loss=signal.stop_loss,
                take_profit=signal.take_profit,
                client_order_id=client_order_id(
                    execution_id=execution.pk, subscription_id=subscription.pk, purpose="e"
                ),
                metadata={"signal": signal.metadata} if signal.metadata else {},
            )
        return trade, True
    except IntegrityError:  # a redelivery: the intent exists already
        return Trade.objects.get(execution=execution, subscription=subscription), False


def _finish_unsent(trade: Trade, *, status: str, reason: str) -> None:
    Trade.objects.filter(pk=trade.pk, status=Trade.Status.PENDING).update(
        status=status, error=reason, updated_at=timezone.now()
    )


def trade_enter(
    *, execution: StrategyExecution, subscription: StrategySubscription, signal: Signal
) -> bool:
    """Open this subscriber's position for an entry signal. Returns True when it opened now."""
    side = ENTRY_SIDE[signal.type]
    for opposite in _open_trades(subscription, OPPOSITE[side]):
        trade_exit(execution=execution, trade=opposite, reason="reversed by an opposite signal")
    trade, _ = _entry_intent(execution=execution, subscription=subscription, signal=signal)
    if trade.status != Trade.Status.PENDING:
        return False
    if subscription.status != StrategySubscription.Status.ACTIVE:
        _finish_unsent(
            trade, status=Trade.Status.SKIPPED, reason=f"subscription {subscription.status}"
        )
        return False
    if any(t.pk != trade.pk for t in _open_trades(subscription, side)):
        _finish_unsent(
            trade, status=Trade.Status.SKIPPED, reason=f"a {side} position is already open"
        )
        return False
    return _send_entry(execution=execution, subscription=subscription, signal=signal, trade=trade)


def _send_entry(
    *,
    execution: StrategyExecution,
    subscription: StrategySubscription,
    signal: Signal,
    trade: Trade,
) -> bool:
    price = execution.close_price or signal.price
    assert price is not None  # an entry signal always carries a price
    quantity = position_quantity(
        capital=subscription.capital,
        risk_per_trade=subscription.risk_per_trade,
        leverage=subscription.leverage,
        price=price,
        stop_loss=signal.stop_loss,
    )
    if quantity <= 0:
        _finish_unsent(trade, status=Trade.Status.SKIPPED, reason="position size rounds to zero")
        return False
    try:
        broker = broker_for(subscription)
    except BrokerUnavailable as exc:
        _finish_unsent(trade, status=Trade.Status.REJECTED, reason=str(exc))
        return False
    result = broker.place_market_order(
        OrderRequest(
            symbol=trade.symbol,
            side="buy" if trade.side == Trade.Side.LONG else "sell",
            quantity=quantity,
            client_order_id=trade.client_order_id,
            reference_price=price,
            reference_time=execution.interval_end,
        )
    )
    if not result.filled:
        _finish_unsent(trade, status=Trade.Status.REJECTED, reason=result.reason)
        return False
    Trade.objects.filter(pk=trade.pk, status=Trade.Status.PENDING).update(
        status=Trade.Status.OPEN,
        quantity=result.quantity,
        entry_price=result.average_price,
        entry_time=result.filled_at,
        entry_fee=result.fee,
        exchange_order_id=result.exchange_order_id,
        updated_at=timezone.now(),
    )
    event_emit(
        EventType.TRADE_FILLED,
        trade_id=trade.pk,
        subscription_id=subscription.pk,
        side=trade.side,
        quantity=str(result.quantity),
        price=str(result.average_price),
    )
    return True


def _claim_exit(*, trade: Trade, execution: StrategyExecution) -> str | None:
    """Claim the exit for this execution; None when another execution owns it or it is closed."""
    cid = client_order_id(
        execution_id=execution.pk, subscription_id=trade.subscription_id, purpose=f"x{trade.pk}"
    )
    claimed = (
        Trade.objects.filter(pk=trade.pk, status=Trade.Status.OPEN)
        .filter(Q(exit_execution__isnull=True) | Q(exit_execution=execution))
        .update(exit_execution=execution, exit_client_order_id=cid)
    )
    return cid if claimed else None


def trade_exit(
    *,
    execution: StrategyExecution,
    trade: Trade,
    reason: str,
    price: Decimal | None = None,
) -> bool:
    """Close an open trade at market (or at ``price``, e.g. its stop). True when closed now."""
    cid = _claim_exit(trade=trade, execution=execution)
    if cid is None:
        return False
    subscription = trade.subscription
    reference = price or execution.close_price
    assert reference is not None
    result = broker_for(subscription).place_market_order(
        OrderRequest(
            symbol=trade.symbol,
            side="sell" if trade.side == Trade.Side.LONG else "buy",
            quantity=trade.quantity,
            client_order_id=cid,
            reference_price=reference,
            reference_time=execution.interval_end,
            reduce_only=True,
        )
    )
    if not result.filled:
        # Release the claim so the next exit signal or stop check tries again.
        Trade.objects.filter(pk=trade.pk).update(exit_execution=None, error=result.reason)
        return False
    _record_exit(
        trade=trade,
        result_price=result.average_price,
        fee=result.fee,
        filled_at=result.filled_at,
        order_id=result.exchange_order_id,
        reason=reason,
    )
    return True


@transaction.atomic
def _record_exit(
    *,
    trade: Trade,
    result_price: Decimal | None,
    fee: Decimal,
    filled_at: datetime | None,
    order_id: str,
    reason: str,
) -> None:
    assert result_price is not None and trade.entry_price is not None
    fees = trade.entry_fee + fee
    pnl = realized_pnl(
        side=trade.side,
        quantity=trade.quantity,
        entry_price=trade.entry_price,
        exit_price=result_price,
        fees=fees,
    )
    updated = Trade.objects.filter(pk=trade.pk, status=Trade.Status.OPEN).update(
        status=Trade.Status.CLOSED,
        exit_price=result_price,
        exit_time=filled_at,
        exit_fee=fee,
        exit_exchange_order_id=order_id,
        pnl=pnl,
        updated_at=timezone.now(),
        metadata={**trade.metadata, "exit_reason": reason},
    )
    if not updated:
        return
    # Realized PnL and fees accumulate in the database, never in a Python read-modify-write.
    StrategySubscription.objects.filter(pk=trade.subscription_id).update(
        realized_pnl=F("realized_pnl") + pnl, fees_paid=F("fees_paid") + fees
    )
    event_emit(
        EventType.TRADE_CLOSED,
        trade_id=trade.pk,
        subscription_id=trade.subscription_id,
        pnl=str(pnl),
        reason=reason,
    )


def trade_exit_side(
    *, execution: StrategyExecution, subscription: StrategySubscription, side: str
) -> int:
    return sum(
        trade_exit(execution=execution, trade=t, reason="exit signal")
        for t in _open_trades(subscription, side)
    )


def _record_failure(
    *,
    execution: StrategyExecution,
    subscription: StrategySubscription,
    signal: Signal,
    exc: Exception,
) -> None:
    """Leave a trace on the subscriber's trade: one subscriber's failure stops nobody else."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    if not signal.type.is_entry:
        Trade.objects.filter(
            subscription=subscription, exit_execution=execution, status=Trade.Status.OPEN
        ).update(exit_execution=None, error=reason)
        return
    trade, _ = _entry_intent(execution=execution, subscription=subscription, signal=signal)
    _finish_unsent(trade, status=Trade.Status.FAILED, reason=reason)


def _process_one(
    *, execution: StrategyExecution, subscription: StrategySubscription, signal: Signal
) -> tuple[int, int]:
    if signal.type.is_entry:
        return int(trade_enter(execution=execution, subscription=subscription, signal=signal)), 0
    side = EXIT_SIDE[signal.type]
    return 0, trade_exit_side(execution=execution, subscription=subscription, side=side)


def fanout_process(*, execution_id: int, subscription_ids: list[int]) -> FanoutOutcome:
    """Carry one execution's signal to these subscribers, each isolated from the others."""
    execution = StrategyExecution.objects.select_related("strategy").get(pk=execution_id)
    signal = Signal.from_json(execution.signal or {"signal": "HOLD"})
    subscriptions = StrategySubscription.objects.filter(pk__in=subscription_ids).select_related(
        "credential"
    )
    opened = closed = failed = 0
    for subscription in subscriptions:
        try:
            o, c = _process_one(execution=execution, subscription=subscription, signal=signal)
            opened, closed = opened + o, closed + c
        except Exception as exc:
            failed += 1
            logger.exception("fan-out failed for subscription %s", subscription.pk)
            _record_failure(execution=execution, subscription=subscription, signal=signal, exc=exc)
    now = timezone.now()
    StrategyExecution.objects.filter(pk=execution_id).update(
        fanout_done=F("fanout_done") + len(subscription_ids),
        trades_generated=F("trades_generated") + opened,
        first_order_at=Coalesce(F("first_order_at"), now),
        last_order_at=now,
    )
    return FanoutOutcome(
        processed=len(subscription_ids), opened=opened, closed=closed, failed=failed
    )


def trades_check_stops(*, execution: StrategyExecution, high: Decimal, low: Decimal) -> int:
    """Close open trades whose stop loss or take profit the closed candle touched.

    When one candle touches both, the stop is assumed first: the conservative reading.
    """
    open_trades = (
        Trade.objects.filter(
            subscription__strategy_id=execution.strategy_id, status=Trade.Status.OPEN
        )
        .filter(Q(stop_loss__isnull=False) | Q(take_profit__isnull=False))
        .select_related("subscription")
    )
    closed = 0
    for trade in open_trades:
        hit = _stop_hit(trade, high=high, low=low)
        if hit is not None:
            reason, price = hit
            closed += trade_exit(execution=execution, trade=trade, reason=reason, price=price)
    return closed


def _stop_hit(trade: Trade, *, high: Decimal, low: Decimal) -> tuple[str, Decimal] | None:
    long = trade.side == Trade.Side.LONG
    if trade.stop_loss is not None and (
        low <= trade.stop_loss if long else high >= trade.stop_loss
    ):
        return "stop loss", trade.stop_loss
    if trade.take_profit is not None and (
        high >= trade.take_profit if long else low <= trade.take_profit
    ):
        return "take profit", trade.take_profit
    return None
