"""Positions: one row per subscription, recomputed from its trades (so always consistent).

Recomputing instead of applying deltas makes a refresh idempotent: a retried fan-out, a
redelivered task or the order sync can refresh the same subscriptions any number of times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import F, OuterRef, QuerySet, Subquery, Sum
from django.utils import timezone

from subscriptions.models import EquityPoint, StrategySubscription
from trades.bulk import bulk_insert, bulk_insert_values, bulk_write
from trades.models import Position, Trade

ZERO = Decimal("0")
MONEY_STEP = Decimal("0.00000001")
PRICE_STEP = Decimal("0.000000000001")


def positions_refresh(
    *,
    subscription_ids: Iterable[int],
    symbol: str,
    mark_price: Decimal | None = None,
    marks: Mapping[int, Decimal] | None = None,
) -> list[Position]:
    """Recompute the positions of these subscriptions; ``mark_price`` values the open part
    (``marks``, one subscription's price, e.g. its fill, wins over it). Returns the rows."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return []
    open_legs = _open_legs(Trade.objects.filter(subscription_id__in=ids))
    closed: dict[int, tuple[Decimal, Decimal]] = {
        sub_id: (pnl or ZERO, fees or ZERO)
        for sub_id, pnl, fees in Trade.objects.filter(
            subscription_id__in=ids, status=Trade.Status.CLOSED
        )
        .values("subscription_id")
        .annotate(total_pnl=Sum("pnl"), total_fees=Sum(F("entry_fee") + F("exit_fee")))
        .values_list("subscription_id", "total_pnl", "total_fees")
    }
    stored = dict(
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
            mark=_mark(sub_id, marks, mark_price, stored),
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
    return rows


Legs = dict[int, list[tuple[str, Decimal, Decimal, Decimal]]]


def _open_legs(trades: QuerySet[Trade]) -> Legs:
    """Each subscription's open trades as (side, quantity, entry price, entry fee)."""
    legs: Legs = defaultdict(list)
    for sub_id, side, qty, price, fee in trades.filter(
        status=Trade.Status.OPEN, entry_price__isnull=False
    ).values_list("subscription_id", "side", "quantity", "entry_price", "entry_fee"):
        if price is not None:
            legs[sub_id].append((side, qty, price, fee))
    return legs


def positions_mark(*, strategy_id: int, symbol: str, mark_price: Decimal) -> list[Position]:
    """Value the open positions of a strategy's holders at ``mark_price`` (a candle close);
    returns their rows.

    Only the open part moves at a close: the open trades are read (one query), the realized
    part is taken from the stored positions, and the mark and unrealized PnL written back in
    one UPDATE. A stored position that does not match its open trades (a batch that recorded
    its fills and died before refreshing them) is recomputed in full by ``positions_refresh``,
    as every position used to be at every close: the closed trades' sums that it reads grow
    with each subscription's history.
    """
    legs = _open_legs(Trade.objects.filter(subscription__strategy_id=strategy_id))
    if not legs:
        return []
    stored = {
        row[0]: row[1:]
        for row in Position.objects.filter(subscription_id__in=list(legs)).values_list(
            "subscription_id",
            "side",
            "quantity",
            "average_entry_price",
            "open_fees",
            "realized_pnl",
            "fees_paid",
        )
    }
    now = timezone.now()
    marked: list[Position] = []
    stale: list[int] = []
    for sub_id, open_legs in legs.items():
        if sub_id not in stored:
            stale.append(sub_id)
            continue
        side, quantity, average, open_fees, realized, fees_paid = stored[sub_id]
        row = _position(
            sub_id,
            symbol=symbol,
            legs=open_legs,
            closed=(realized, fees_paid - open_fees),
            mark=mark_price,
        )
        if (row.side, row.quantity, row.average_entry_price, row.open_fees) != (
            side,
            quantity,
            average,
            open_fees,
        ):
            stale.append(sub_id)
            continue
        row.updated_at = now
        marked.append(row)
    # The rows' primary keys are not read: the UPDATE matches on the subscription.
    bulk_write(marked, ["mark_price", "unrealized_pnl", "updated_at"], key="subscription")
    return marked + positions_refresh(subscription_ids=stale, symbol=symbol, mark_price=mark_price)


def _mark(
    sub_id: int,
    marks: Mapping[int, Decimal] | None,
    mark_price: Decimal | None,
    stored: Mapping[int, Decimal | None],
) -> Decimal | None:
    if marks and sub_id in marks:
        return marks[sub_id]
    return mark_price if mark_price is not None else stored.get(sub_id)


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


# --- equity points --------------------------------------------------------------------------
Kind = EquityPoint.Kind
DAILY_CHUNK = 1000
# The equity of a subscription's last point, its capital then, and when it was.
LastPoint = tuple[Decimal, Decimal, datetime]


@dataclass(slots=True)
class Point:
    """An equity point as written (an ``EquityPoint`` row without the model's machinery: a
    fan-out batch writes one per fill, and building model instances cost more than the
    INSERT)."""

    subscription_id: int
    time: datetime
    kind: str
    equity: Decimal
    capital: Decimal
    realized: Decimal
    unrealized: Decimal
    fees: Decimal

    def row(self) -> tuple[object, ...]:
        return (
            self.subscription_id,
            self.time,
            self.kind,
            self.equity,
            self.capital,
            self.realized,
            self.unrealized,
            self.fees,
            {},
        )


POINT_FIELDS = (
    "subscription",
    "time",
    "kind",
    "equity",
    "capital",
    "realized",
    "unrealized",
    "fees",
    "detail",
)


def equity_points_record(
    *,
    positions: Sequence[Position],
    kind: str,
    times: Mapping[int, datetime],
    only_changed: bool = True,
    capitals: Mapping[int, Decimal] | None = None,
) -> list[Point]:
    """Store each position's equity at ``times[subscription]``, in one INSERT for all.

    With ``only_changed``, a subscription whose equity and capital are those of its last point
    writes nothing, unless that point is from an earlier UTC day: it then writes a daily point,
    so a chart has a value per day without a row per candle. ``capitals``: each
    subscription's capital when the caller has it loaded (read otherwise). Returns the points
    written.
    """
    if not positions:
        return []
    ids = [p.subscription_id for p in positions]
    # A point that is always written needs only the capital: the last point's three
    # correlated lookups per subscription were most of a fill batch's equity cost.
    state = _equity_state(ids) if only_changed else dict.fromkeys(ids, None)
    if capitals is None or any(pk not in capitals for pk in ids):
        capitals = _capitals(ids)
    points = []
    for position in positions:
        sub_id = position.subscription_id
        point = _point(position, capital=capitals[sub_id], kind=kind, time=times[sub_id])
        kept = _keep(point, state[sub_id]) if only_changed else point
        if kept is not None:
            points.append(kept)
    bulk_insert_values(EquityPoint, POINT_FIELDS, [p.row() for p in points])
    return points


def _capitals(ids: Sequence[int]) -> dict[int, Decimal]:
    rows = StrategySubscription.objects.filter(pk__in=ids).order_by().values_list("pk", "capital")
    return dict(rows)


def _equity_state(ids: Sequence[int]) -> dict[int, LastPoint | None]:
    """Each subscription's last point, in one query."""
    # The last point written (ids are causal order; times mix candle closes and wall-clock
    # capital changes when past candles are replayed).
    last = EquityPoint.objects.filter(subscription=OuterRef("pk")).order_by("-id")
    rows = (
        StrategySubscription.objects.filter(pk__in=ids)
        .order_by()
        .annotate(
            last_equity=Subquery(last.values("equity")[:1]),
            last_capital=Subquery(last.values("capital")[:1]),
            last_time=Subquery(last.values("time")[:1]),
        )
        .values_list("pk", "last_equity", "last_capital", "last_time")
    )
    return {
        pk: (equity, capital, time) if time is not None else None
        for pk, equity, capital, time in rows
    }


def _keep(point: Point, last: LastPoint | None) -> Point | None:
    if last is None:
        return point
    equity, capital, time = last
    if (point.equity, point.capital) != (equity, capital):
        return point
    if time.astimezone(point.time.tzinfo).date() < point.time.date():
        point.kind = Kind.DAILY
        return point
    return None


def _point(
    position: Position,
    *,
    capital: Decimal,
    kind: str,
    time: datetime,
) -> Point:
    equity = capital + position.realized_pnl + position.unrealized_pnl
    return Point(
        subscription_id=position.subscription_id,
        time=time,
        kind=kind,
        equity=equity.quantize(MONEY_STEP),
        capital=capital,
        realized=position.realized_pnl,
        unrealized=position.unrealized_pnl,
        fees=position.fees_paid,
    )


def equity_points_fills(
    *,
    positions: Sequence[Position],
    filled: Mapping[int, tuple[datetime, Decimal]],
    capitals: Mapping[int, Decimal] | None = None,
) -> list[Point]:
    """Points for the subscriptions whose trades filled (subscription -> (fill time, price))."""
    rows = [p for p in positions if p.subscription_id in filled]
    times = {sub_id: at for sub_id, (at, _) in filled.items()}
    return equity_points_record(
        positions=rows, kind=Kind.FILL, times=times, only_changed=False, capitals=capitals
    )


def equity_points_daily(*, at: datetime) -> int:
    """A daily point for every subscription not cancelled that has none since 00:00 UTC.

    Flat subscriptions write no close points; this keeps one value per day on their chart.
    """
    midnight = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ids = list(
        StrategySubscription.objects.exclude(status=StrategySubscription.Status.CANCELLED)
        .exclude(pk__in=EquityPoint.objects.filter(time__gte=midnight).values("subscription_id"))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    written = 0
    for start in range(0, len(ids), DAILY_CHUNK):
        chunk = ids[start : start + DAILY_CHUNK]
        stored = {p.subscription_id: p for p in Position.objects.filter(subscription_id__in=chunk)}
        rows = [stored.get(pk) or Position(subscription_id=pk) for pk in chunk]
        times = dict.fromkeys(chunk, at)
        written += len(
            equity_points_record(positions=rows, kind=Kind.DAILY, times=times, only_changed=False)
        )
    return written
