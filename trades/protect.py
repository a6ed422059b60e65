"""Stop loss and take profit resting on the exchange, for live trades where it takes them.

After a live entry fills, its stop loss and take profit go out as one one-cancels-the-other
list (``trades.brokers.live.oco_supported``), each leg an ``Order`` intent of its own
(purposes ``stop:<trade>`` / ``take:<trade>``, deterministic client order ids, claimed and
looked up before any resend, exactly like entries). From then on the exchange is the source
of truth: the candle-close check leaves the trade alone, the order sync records the leg that
filled (closing the trade) and cancels the other, and an exit cancels both first. Where the
exchange takes no such list (or the placement failed), the intents end skipped or rejected
and the candle-close check closes the trade, as for paper.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from subscriptions.models import StrategySubscription
from trades.brokers import OrderRequest, OrderResult, OrderStatus
from trades.brokers.base import OrderSide
from trades.brokers.live import live_place_oco_many
from trades.models import Order, Trade
from trades.orders import (
    Leg,
    Tally,
    leg_for,
    legs_cancel,
    legs_credential_refs,
    order_intents,
    orders_claim,
    orders_reclaim,
    orders_record,
    request_from_intent,
)
from trades.purposes import OrderPurpose, PurposeKind, protective_q


@dataclass(frozen=True)
class ProtectiveFill:
    reason: str  # "stop loss" | "take profit"
    price: Decimal  # a price the candle traded


def protective_fill(
    *,
    side: str,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    open_price: Decimal,
    high: Decimal,
    low: Decimal,
) -> ProtectiveFill | None:
    """The stop or target a closed candle reached first from its open, and the price it filled.

    A candle that opens beyond a level gapped through it: the fill is at the open, the first
    price traded past it (filling at the level would book a loss smaller, or a profit larger,
    than the market gave). Opening between them, a level the candle's range touched fills at
    the level; when it touched both, which came first is unknown, so the stop is taken (the
    conservative reading).
    """
    long = side == "long"

    def past_stop(price: Decimal) -> bool:
        assert stop_loss is not None
        return price <= stop_loss if long else price >= stop_loss

    def past_target(price: Decimal) -> bool:
        assert take_profit is not None
        return price >= take_profit if long else price <= take_profit

    if stop_loss is not None and past_stop(open_price):
        return ProtectiveFill("stop loss", open_price)
    if take_profit is not None and past_target(open_price):
        return ProtectiveFill("take profit", open_price)
    worst, best = (low, high) if long else (high, low)
    if stop_loss is not None and past_stop(worst):
        return ProtectiveFill("stop loss", stop_loss)
    if take_profit is not None and past_target(best):
        return ProtectiveFill("take profit", take_profit)
    return None


def protective_place(*, trade_ids: Iterable[int], tally: Tally) -> int:
    """Place the stop loss and take profit of these live trades whose entry filled."""
    filled = Order.objects.filter(
        trade_id__in=list(trade_ids), purpose=OrderPurpose.entry(), status=Order.Status.FILLED
    ).values("trade_id")
    trades = list(
        Trade.objects.filter(
            pk__in=filled,
            status=Trade.Status.OPEN,
            exit_execution__isnull=True,
            stop_loss__isnull=False,
            take_profit__isnull=False,
            subscription__mode=StrategySubscription.Mode.LIVE,
        )
        .select_related("subscription__credential", "execution")
        .order_by("pk")
    )
    by_execution: dict[int, list[Trade]] = defaultdict(list)
    for trade in trades:
        by_execution[trade.execution_id].append(trade)
    pairs: list[tuple[Leg, Leg]] = []
    for group in by_execution.values():
        pairs += _pairs(group)
    claimed = {leg.order.pk for leg in orders_claim([leg for pair in pairs for leg in pair])}
    # Both legs or neither: a list half-claimed elsewhere is that worker's to send.
    pairs = [(s, t) for s, t in pairs if s.order.pk in claimed and t.order.pk in claimed]
    pairs = _stand_down(pairs, tally)
    refs = legs_credential_refs([stop for stop, _ in pairs])
    items = [
        (ref, stop.request, take.request) for ref, (stop, take) in zip(refs, pairs, strict=True)
    ]
    for (stop, take), (stop_result, take_result) in zip(
        pairs, live_place_oco_many(items), strict=True
    ):
        stop.result, take.result = stop_result, take_result
    orders_record([leg for pair in pairs for leg in pair], tally)
    return len(pairs)


def _stand_down(pairs: list[tuple[Leg, Leg]], tally: Tally) -> list[tuple[Leg, Leg]]:
    """Drop the pairs of trades an exit claimed since they were read: nothing is placed.

    Checked after the intents are claimed: an exit claims its trade before it looks for
    protective orders to cancel, so either it sees these intents (and cancels them, or holds
    its exit until they are known) or this check sees its claim.
    """
    if not pairs:
        return pairs
    exiting = set(
        Trade.objects.filter(pk__in=[stop.trade.pk for stop, _ in pairs])
        .filter(Q(exit_execution__isnull=False) | ~Q(status=Trade.Status.OPEN))
        .values_list("pk", flat=True)
    )
    skipped = OrderResult(
        status=OrderStatus.SKIPPED, reason="not placed: the trade is being exited"
    )
    for stop, take in pairs:
        if stop.trade.pk in exiting:
            stop.result = take.result = skipped
    orders_record([leg for pair in pairs for leg in pair if leg.result is not None], tally)
    return [(stop, take) for stop, take in pairs if stop.trade.pk not in exiting]


def _pairs(trades: list[Trade]) -> list[tuple[Leg, Leg]]:
    execution = trades[0].execution
    now = timezone.now()
    specs = []
    for trade in trades:
        side: OrderSide = "sell" if trade.side == Trade.Side.LONG else "buy"
        for kind, price in (
            (PurposeKind.STOP, trade.stop_loss),
            (PurposeKind.TAKE, trade.take_profit),
        ):
            assert price is not None
            purpose = OrderPurpose.protective(kind, trade.pk)
            request = OrderRequest(
                symbol=trade.symbol,
                side=side,
                quantity=trade.quantity,
                client_order_id=purpose.client_order_id(
                    execution_id=execution.pk, subscription_id=trade.subscription_id
                ),
                reference_price=price,
                reference_time=now,
                reduce_only=True,
                type=kind.value,  # the trigger price is the order's price
                price=price,
            )
            specs.append((trade, purpose, request))
    intents = order_intents(execution, specs)
    legs = []
    for trade, purpose, request in specs:
        order = intents[(trade.subscription_id, purpose)]
        legs.append(Leg(trade.subscription, trade, order, request_from_intent(order, request)))
    return [(legs[i], legs[i + 1]) for i in range(0, len(legs), 2)]


def protective_release(*, trade_ids: Iterable[int], tally: Tally) -> set[int]:
    """Cancel the protective orders resting for these trades, before anything else exits them.

    Returns the trades that must not be exited now: one of their protective orders filled
    (the trade is closed by the exchange) or is in a state not known yet (never double-close).
    """
    ids = list(trade_ids)
    active = list(
        Order.objects.filter(trade_id__in=ids, status__in=Order.ACTIVE_STATUSES)
        .filter(protective_q())
        .select_related("subscription__credential", "trade", "execution__strategy")
        .order_by("pk")
    )
    if not active:
        return set()
    done = legs_cancel([leg_for(order) for order in active if order.exchange_order_id])
    orders_record(orders_reclaim(done), tally)
    still = Order.objects.filter(trade_id__in=ids, status__in=Order.ACTIVE_STATUSES).filter(
        protective_q()
    )
    return set(still.values_list("trade_id", flat=True)) | set(
        Trade.objects.filter(pk__in=ids)
        .exclude(status=Trade.Status.OPEN)
        .values_list("pk", flat=True)
    )
