"""Positions: one row per subscription, recomputed from its trades (so always consistent).

Recomputing instead of applying deltas makes a refresh idempotent: a retried fan-out, a
redelivered task or the order sync can refresh the same subscriptions any number of times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from django.db.models import F, Sum

from trades.bulk import bulk_insert
from trades.models import Position, Trade

ZERO = Decimal("0")
MONEY_STEP = Decimal("0.00000001")
PRICE_STEP = Decimal("0.000000000001")


def positions_refresh(
    *,
    subscription_ids: Iterable[int],
    symbol: str,
    mark_price: Decimal | None = None,
) -> int:
    """Recompute the positions of these subscriptions; ``mark_price`` values the open part."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return 0
    open_legs: dict[int, list[tuple[str, Decimal, Decimal, Decimal]]] = defaultdict(list)
    for sub_id, side, qty, price, fee in Trade.objects.filter(
        subscription_id__in=ids, status=Trade.Status.OPEN, entry_price__isnull=False
    ).values_list("subscription_id", "side", "quantity", "entry_price", "entry_fee"):
        if price is not None:
            open_legs[sub_id].append((side, qty, price, fee))
    closed: dict[int, tuple[Decimal, Decimal]] = {
        sub_id: (pnl or ZERO, fees or ZERO)
        for sub_id, pnl, fees in Trade.objects.filter(
            subscription_id__in=ids, status=Trade.Status.CLOSED
        )
        .values("subscription_id")
        .annotate(total_pnl=Sum("pnl"), total_fees=Sum(F("entry_fee") + F("exit_fee")))
        .values_list("subscription_id", "total_pnl", "total_fees")
    }
    marks = dict(
        Position.objects.filter(subscription_id__in=ids).values_list(
            "subscription_id", "mark_price"
        )
    )
    rows = [
        _position(
            sub_id,
            symbol=symbol,
            legs=open_legs.get(sub_id, []),
            closed=closed.get(sub_id),
            mark=mark_price if mark_price is not None else marks.get(sub_id),
        )
        for sub_id in ids
    ]
    bulk_insert(
        rows,
        conflict=["subscription"],
        update=[
            "symbol",
            "side",
            "quantity",
            "average_entry_price",
            "open_fees",
            "realized_pnl",
            "unrealized_pnl",
            "fees_paid",
            "mark_price",
            "updated_at",
        ],
    )
    return len(rows)


def _position(
    sub_id: int,
    *,
    symbol: str,
    legs: list[tuple[str, Decimal, Decimal, Decimal]],
    closed: tuple[Decimal, Decimal] | None,
    mark: Decimal | None,
) -> Position:
    signed = sum((q if side == Trade.Side.LONG else -q for side, q, _, _ in legs), ZERO)
    side = (
        Position.Side.FLAT
        if signed == 0
        else (Position.Side.LONG if signed > 0 else Position.Side.SHORT)
    )
    held = [(q, p) for s, q, p, _ in legs if s == side]
    held_qty = sum((q for q, _ in held), ZERO)
    average = sum((q * p for q, p in held), ZERO) / held_qty if held_qty else None
    open_fees = sum((fee for *_, fee in legs), ZERO)
    unrealized = ZERO
    if average is not None and mark is not None:
        direction = 1 if side == Position.Side.LONG else -1
        unrealized = (mark - average) * abs(signed) * direction - open_fees
    realized, closed_fees = closed or (ZERO, ZERO)
    return Position(
        subscription_id=sub_id,
        symbol=symbol,
        side=side,
        quantity=abs(signed),
        average_entry_price=average.quantize(PRICE_STEP) if average is not None else None,
        open_fees=open_fees.quantize(MONEY_STEP),
        realized_pnl=realized.quantize(MONEY_STEP),
        unrealized_pnl=unrealized.quantize(MONEY_STEP),
        fees_paid=(closed_fees + open_fees).quantize(MONEY_STEP),
        mark_price=mark,
    )
