"""The follower's protections (issue 14), checked for a whole batch at once.

* Before an entry's order intent is written (``trades.services._enter``): a cooldown after
  losses in a row, the daily loss limit and the maximum open trades need the batch's history,
  read in one query per kind, and only for the subscriptions that set them
  (``entry_guards_load``); the maximum notional and the slippage cap need the order itself
  (``EntryGuards.order``). An entry held back is skipped with the reason on its trade, like
  any other skip, and each is a ``ProtectionTrip`` (``trips_record``) and a notice.
* After equity points are stored (fills, and the candle-close valuation of holders): the
  maximum drawdown from the subscription's peak (``drawdown_check``). A trip pauses the
  subscription with the reason, is recorded and notified; the positions are closed, when the
  follower chose so, by the caller (``trades.closes.positions_close_tripped``), once the
  batch that saw it has recorded its own orders.

Exits are never checked here: a protection holds back risk, never a way out of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from django.db import transaction
from django.db.models import Case, Count, DecimalField, F, Sum, Value, When, Window
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Greatest, RowNumber

from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record
from strategies.models import Strategy
from subscriptions.models import MONEY, StrategySubscription
from subscriptions.services import subscription_pause
from trades.brokers import OrderRequest
from trades.bulk import bulk_insert
from trades.models import ProtectionTrip, Trade
from trades.positions import MONEY_STEP, Point

Protection = ProtectionTrip.Protection
Action = ProtectionTrip.Action
BPS = Decimal(10000)
PRICE_STEP = Decimal("0.000000000001")
HUNDRED = Decimal(100)
STOP_OUT = "stop loss"  # a trade's exit_reason when its stop loss closed it
Sub = StrategySubscription


@dataclass(frozen=True)
class Tripped:
    """One protection holding back one entry: why, and the figures it compared."""

    protection: str
    reason: str
    figures: dict[str, str] = field(default_factory=dict)


def _pct(value: Decimal) -> str:
    return f"{value.normalize():f}"


# --- entries ----------------------------------------------------------------------------------
@dataclass
class EntryGuards:
    """What the batch's protections need to know, read once for all its subscribers."""

    at: datetime  # the signal's time: "today" and a cooldown's end are measured from it
    open_trades: dict[tuple[int, str], int] = field(default_factory=dict)  # (user, mode)
    day_pnl: dict[int, Decimal] = field(default_factory=dict)
    cooling: dict[int, tuple[datetime, int]] = field(default_factory=dict)  # until, losses

    def before_sizing(self, sub: Sub) -> Tripped | None:
        """The protections that hold an entry back whatever its size."""
        return self._cooldown(sub) or self._daily_loss(sub) or self._open_trades(sub)

    def order(
        self, sub: Sub, request: OrderRequest, *, market: Decimal | None
    ) -> tuple[Tripped | None, OrderRequest]:
        """The protections on the order itself; ``market``: where it would fill now (the
        venue's last price live, the paper fill on paper), None when not known.

        Returns the reason it is held back, or the request as it may go out (a live entry
        under a slippage cap goes out as a limit at the cap)."""
        tripped = self._notional(sub, request)
        if tripped:
            return tripped, request
        return _slippage(sub, _bump_within(sub, request), market)

    def _cooldown(self, sub: Sub) -> Tripped | None:
        if sub.pk not in self.cooling:
            return None
        until, losses = self.cooling[sub.pk]
        return Tripped(
            Protection.COOLDOWN,
            f"cooldown: {losses} losing trades or stop-outs in a row; no entries until "
            f"{until:%Y-%m-%d %H:%M} UTC",
            {"losses_in_a_row": str(losses), "until": until.isoformat()},
        )

    def _daily_loss(self, sub: Sub) -> Tripped | None:
        if sub.daily_loss_limit_pct is None:
            return None
        lost = (-min(self.day_pnl.get(sub.pk, Decimal(0)), Decimal(0))).quantize(MONEY_STEP)
        limit = (sub.capital * sub.daily_loss_limit_pct / HUNDRED).quantize(MONEY_STEP)
        if lost <= 0 or lost < limit:
            return None
        return Tripped(
            Protection.DAILY_LOSS_LIMIT,
            f"daily loss limit: {lost:f} lost today (UTC), the limit is "
            f"{_pct(sub.daily_loss_limit_pct)}% of the capital ({limit:f})",
            {
                "lost_today": f"{lost:f}",
                "limit": f"{limit:f}",
                "limit_pct": f"{sub.daily_loss_limit_pct}",
            },
        )

    def _open_trades(self, sub: Sub) -> Tripped | None:
        if sub.max_open_trades is None:
            return None
        count = self.open_trades.get((sub.user_id, sub.mode), 0)
        if count < sub.max_open_trades:
            return None
        return Tripped(
            Protection.MAX_OPEN_TRADES,
            f"max open trades: {count} open across your {sub.mode} subscriptions "
            f"(max {sub.max_open_trades})",
            {"open_trades": str(count), "max_open_trades": str(sub.max_open_trades)},
        )

    def _notional(self, sub: Sub, request: OrderRequest) -> Tripped | None:
        if sub.max_order_notional is None:
            return None
        notional = (request.quantity * (request.price or request.reference_price)).quantize(
            MONEY_STEP
        )
        if notional <= sub.max_order_notional:
            return None
        return Tripped(
            Protection.MAX_ORDER_NOTIONAL,
            f"max notional per order: this entry is worth {notional:f}, above your maximum "
            f"of {sub.max_order_notional:f}",
            {"notional": f"{notional:f}", "max_order_notional": f"{sub.max_order_notional:f}"},
        )


def _bump_within(sub: Sub, request: OrderRequest) -> OrderRequest:
    """An order bumped to the market's minimum stays within the maximum notional too."""
    if request.bump_max_notional is None or sub.max_order_notional is None:
        return request
    return replace(
        request, bump_max_notional=min(request.bump_max_notional, sub.max_order_notional)
    )


def _slippage(
    sub: Sub, request: OrderRequest, market: Decimal | None
) -> tuple[Tripped | None, OrderRequest]:
    if sub.slippage_cap_bps is None or request.reference_price <= 0:
        return None, request
    cap = Decimal(sub.slippage_cap_bps) / BPS
    signal_price = request.reference_price
    buy = request.side == "buy"
    if market is not None:
        # Only a move against the follower is slippage: a buy cheaper than the signal is not.
        worse = ((market - signal_price) if buy else (signal_price - market)) / signal_price
        if worse > cap:
            where = "the market" if sub.mode == Sub.Mode.LIVE else "the paper fill"
            return Tripped(
                Protection.SLIPPAGE_CAP,
                f"slippage cap: {where} at {market.normalize():f} is {worse * BPS:.1f} bps "
                f"worse than the signal's price {signal_price.normalize():f} "
                f"(cap {sub.slippage_cap_bps} bps)",
                {
                    "signal_price": f"{signal_price}",
                    "market_price": f"{market}",
                    "slippage_bps": f"{(worse * BPS).quantize(Decimal('0.1'))}",
                    "cap_bps": str(sub.slippage_cap_bps),
                },
            ), request
    if sub.mode != Sub.Mode.LIVE:
        return None, request  # a paper fill is the close and its slippage: checked above
    # The worst price the follower accepts, rounded inward so the cap always holds.
    if buy:
        bound = (signal_price * (1 + cap)).quantize(PRICE_STEP, rounding=ROUND_DOWN)
        price = bound if request.price is None else min(request.price, bound)
    else:
        bound = (signal_price * (1 - cap)).quantize(PRICE_STEP, rounding=ROUND_UP)
        price = bound if request.price is None else max(request.price, bound)
    return None, replace(request, type="limit", price=price)


def entry_guards_load(*, subs: Sequence[Sub], execution_id: int, at: datetime) -> EntryGuards:
    """Read what the batch's protections need: at most one query per kind, none for a kind
    no subscriber of the batch uses."""
    guards = EntryGuards(at=at)
    users = {s.user_id for s in subs if s.max_open_trades is not None}
    if users:
        guards.open_trades = _open_trades(users, execution_id)
    losing = [s.pk for s in subs if s.daily_loss_limit_pct is not None]
    if losing:
        guards.day_pnl = _day_pnl(losing, at)
    cooling = [s for s in subs if s.cooldown_after_losses and s.cooldown_minutes]
    if cooling:
        guards.cooling = _cooling(cooling, at)
    return guards


def _open_trades(users: set[int], execution_id: int) -> dict[tuple[int, str], int]:
    """Open trades, and entries still being filled, per (user, mode); this execution's own
    intents left out (they are the entries being decided)."""
    rows = (
        Trade.objects.filter(
            subscription__user_id__in=users, status__in=(Trade.Status.OPEN, Trade.Status.PENDING)
        )
        .exclude(execution_id=execution_id)
        .values("subscription__user_id", "subscription__mode")
        .annotate(count=Count("id"))
        .values_list("subscription__user_id", "subscription__mode", "count")
    )
    return {(user, mode): count for user, mode, count in rows}


def _day_pnl(ids: list[int], at: datetime) -> dict[int, Decimal]:
    """The PnL (net of fees) of the trades closed since 00:00 UTC of ``at``'s day."""
    midnight = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        Trade.objects.filter(
            subscription_id__in=ids,
            status=Trade.Status.CLOSED,
            exit_time__gte=midnight,
            exit_time__lte=at,
        )
        .values("subscription_id")
        .annotate(total=Sum("pnl"))
        .values_list("subscription_id", "total")
    )
    return {sub_id: total or Decimal(0) for sub_id, total in rows}


def _cooling(subs: list[Sub], at: datetime) -> dict[int, tuple[datetime, int]]:
    """Subscriptions whose last N closed trades all lost or stopped out, and whose cooldown
    from the last of them still runs at ``at``: until when, and N."""
    deepest = max(s.cooldown_after_losses or 0 for s in subs)
    ranked = (
        Trade.objects.filter(
            subscription_id__in=[s.pk for s in subs],
            status=Trade.Status.CLOSED,
            exit_time__lte=at,
        )
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("subscription_id")],
                order_by=[F("exit_time").desc(), F("id").desc()],
            ),
            exit_reason=KT("metadata__exit_reason"),
        )
        .filter(rank__lte=deepest)
        .values_list("subscription_id", "rank", "pnl", "exit_reason", "exit_time")
    )
    recent: dict[int, list[tuple[int, bool, datetime]]] = defaultdict(list)
    for sub_id, rank, pnl, reason, exit_time in ranked:
        assert exit_time is not None  # filtered on it
        bad = (pnl is not None and pnl < 0) or reason == STOP_OUT
        recent[sub_id].append((rank, bad, exit_time))
    cooling = {}
    for sub in subs:
        assert sub.cooldown_after_losses and sub.cooldown_minutes
        last = sorted(recent.get(sub.pk, []))[: sub.cooldown_after_losses]
        if len(last) < sub.cooldown_after_losses or not all(bad for _, bad, _ in last):
            continue
        until = last[0][2] + timedelta(minutes=sub.cooldown_minutes)
        if at < until:
            cooling[sub.pk] = (until, sub.cooldown_after_losses)
    return cooling


def trips_record(*, trips: Sequence[tuple[Sub, Trade, Tripped]]) -> None:
    """Record the entries these protections held back, and tell their followers; in the
    caller's transaction (with the skips), once per trade whatever the retries."""
    if not trips:
        return
    bulk_insert(
        [
            ProtectionTrip(
                subscription_id=sub.pk,
                protection=tripped.protection,
                action=Action.ENTRY_SKIPPED,
                reason=tripped.reason[:255],
                figures=tripped.figures,
                trade=trade,
            )
            for sub, trade, tripped in trips
        ]
    )
    notifications_record(
        notices=[
            _notice(sub, f"trade:{trade.pk}", tripped, Action.ENTRY_SKIPPED, trade_id=trade.pk)
            for sub, trade, tripped in trips
        ]
    )


def _notice(
    sub: Sub, key: str, tripped: Tripped, action: str, *, trade_id: int | None = None
) -> Notice:
    return Notice(
        user_id=sub.user_id,
        event=NotificationEvent.PROTECTION_TRIGGERED,
        key=f"{NotificationEvent.PROTECTION_TRIGGERED}:{key}",
        payload={
            "subscription_id": sub.pk,
            "strategy_id": sub.strategy_id,
            "protection": tripped.protection,
            "action": action,
            "reason": tripped.reason,
            "figures": tripped.figures,
            "trade_id": trade_id,
        },
    )


# --- maximum drawdown -------------------------------------------------------------------------
def drawdown_check(*, points: Iterable[Point]) -> dict[int, datetime]:
    """Raise the peaks of the guarded subscriptions with these new equity points, and trip
    those now as far below their peak as their maximum drawdown allows.

    One query for the batch (none of the points' subscriptions guarded: nothing else); a peak
    raised is one UPDATE for all. Returns the subscriptions tripped whose follower asked for
    their positions to be closed, with the time of the point that tripped them.
    """
    latest: dict[int, Point] = {}
    highest: dict[int, Decimal] = {}
    for point in points:
        latest[point.subscription_id] = point  # in the order they were written
        highest[point.subscription_id] = max(
            highest.get(point.subscription_id, point.equity), point.equity
        )
    if not latest:
        return {}
    guarded = list(
        Sub.objects.filter(
            pk__in=list(latest), max_drawdown_pct__isnull=False, status=Sub.Status.ACTIVE
        ).values_list("pk", "max_drawdown_pct", "equity_peak")
    )
    if not guarded:
        return {}
    peaks = {
        pk: max(peak, highest[pk]) if peak is not None else highest[pk] for pk, _, peak in guarded
    }
    _peaks_raise({pk: peaks[pk] for pk, _, peak in guarded if peak is None or peaks[pk] > peak})
    to_close: dict[int, datetime] = {}
    for pk, limit, _ in guarded:
        assert limit is not None
        point, peak = latest[pk], peaks[pk]
        if peak <= 0:
            continue
        drawdown = (peak - point.equity) / peak * HUNDRED
        if drawdown >= limit and _drawdown_trip(pk, point, peak, drawdown, limit):
            to_close[pk] = point.time
    return to_close


def _peaks_raise(peaks: dict[int, Decimal]) -> None:
    """Store higher peaks in one statement; never lower one a concurrent batch raised."""
    if not peaks:
        return
    money = DecimalField(**MONEY)
    raised = Case(
        *[
            When(pk=pk, then=Greatest(Coalesce(F("equity_peak"), Value(v)), Value(v)))
            for pk, v in peaks.items()
        ],
        output_field=money,
    )
    Sub.objects.filter(pk__in=list(peaks)).update(equity_peak=raised)


def _drawdown_trip(pk: int, point: Point, peak: Decimal, drawdown: Decimal, limit: Decimal) -> bool:
    """Pause, record and notify, once (a subscription no longer active is left alone).
    Returns whether its positions are to be closed."""
    with transaction.atomic():
        strategy_id = Sub.objects.filter(pk=pk).values_list("strategy_id", flat=True).get()
        # The strategy's row first, as every status change of its subscriptions locks it.
        Strategy.objects.select_for_update().filter(pk=strategy_id).exists()
        sub = Sub.objects.select_for_update().get(pk=pk)
        if sub.status != Sub.Status.ACTIVE:
            return False
        close = sub.close_on_max_drawdown
        tripped = Tripped(
            Protection.MAX_DRAWDOWN,
            f"max drawdown {drawdown:.1f}% ≥ {_pct(limit)}%: equity {point.equity:f} from a "
            f"peak of {peak:f}" + ("; positions closed" if close else ""),
            {
                "drawdown_pct": f"{drawdown.quantize(Decimal('0.01'))}",
                "limit_pct": f"{limit}",
                "equity": f"{point.equity}",
                "peak": f"{peak}",
                "close_positions": "true" if close else "false",
            },
        )
        action = Action.PAUSED_AND_CLOSED if close else Action.PAUSED
        trip = ProtectionTrip.objects.create(
            subscription=sub,
            protection=tripped.protection,
            action=action,
            reason=tripped.reason[:255],
            figures=tripped.figures,
        )
        subscription_pause(subscription=sub, reason=tripped.reason[:255])
        notifications_record(notices=[_notice(sub, f"trip:{trip.pk}", tripped, action)])
    return close
