"""Per-subscriber order work: the fan-out of a signal, stops, joins, and the order sync.

Paper and live subscriptions go through the same steps (``trades.orders`` holds the batch
machinery that makes them exactly-once); only the broker call differs.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.clock import market_to_real
from core.logs import log_context
from core.metrics import CLOSE_TO_LAST_ORDER, FANOUT_BATCH_DURATION
from core.retry import TRANSIENT
from strategies.models import StrategyExecution
from strategies.selectors import execution_signal_age_s
from strategies.signals import InvalidSignal, Signal, SignalType, signal_check_levels
from subscriptions.models import EquityPoint, StrategySubscription
from trades.brokers import OrderRequest, OrderResult, OrderStatus, paper_broker
from trades.brokers.base import CredentialFailure
from trades.brokers.live import live_last_price
from trades.bulk import bulk_fast, bulk_insert_new, bulk_write
from trades.guards import EntryGuards, Tripped, drawdown_check, entry_guards_load, trips_record
from trades.models import Order, Position, Trade
from trades.orders import (
    Fills,
    Leg,
    PaperEntry,
    PaperExit,
    Tally,
    leg_for,
    legs_cancel,
    legs_lookup,
    order_intents,
    orders_claim,
    orders_reclaim,
    orders_record,
    orders_send,
    orders_settle,
    paper_exits,
    paper_fills,
    positions_settle,
    request_from_intent,
)
from trades.positions import equity_points_record, positions_mark
from trades.protect import (
    ProtectiveFill,
    protective_fill,
    protective_place,
    protective_release,
)
from trades.purposes import OrderPurpose, PurposeKind, protective_q
from trades.rules import (
    ENTRY_SIDE,
    EXIT_SIDE,
    EXIT_SIGNAL,
    OPPOSITE,
    REVERSED,
    entry_quantity,
    entry_side,
    exit_side,
    holding_reason,
)
from trades.sizing import PositionUnfit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FanoutOutcome:
    processed: int
    opened: int
    closed: int
    failed: int


# --- entries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _EntryContext:
    execution: StrategyExecution  # the execution the intents belong to
    signal: Signal
    price: Decimal  # the market price at the signal: sizing, paper fills, the price band
    time: datetime
    fresh_only: bool  # apply the signal's max age and the price band


def _entry_trade(ctx: _EntryContext, sub: StrategySubscription) -> Trade:
    """The entry's trade as its intent is written: pending, nothing sent."""
    return Trade(
        subscription=sub,
        execution=ctx.execution,
        symbol=ctx.execution.strategy.symbol,
        side=ENTRY_SIDE[ctx.signal.type],
        stop_loss=ctx.signal.stop_loss,
        take_profit=ctx.signal.take_profit,
        client_order_id=OrderPurpose.entry().client_order_id(
            execution_id=ctx.execution.pk, subscription_id=sub.pk
        ),
        metadata={"signal": ctx.signal.metadata} if ctx.signal.metadata else {},
    )


def _entry_intents(ctx: _EntryContext, subs: Sequence[StrategySubscription]) -> dict[int, Trade]:
    inserted = bulk_insert_new([_entry_trade(ctx, sub) for sub in subs], key="client_order_id")
    trades = {t.subscription_id: t for t in inserted}
    # A redelivery finds the intents written already: those are read.
    rest = [s for s in subs if s.pk not in trades]
    if rest:
        existing = Trade.objects.filter(execution=ctx.execution, subscription__in=rest)
        trades.update({t.subscription_id: t for t in existing})
    return trades


def _entry_request(ctx: _EntryContext, sub: StrategySubscription, trade: Trade) -> OrderRequest:
    quantity = entry_quantity(
        capital=sub.capital,
        risk_per_trade=sub.risk_per_trade,
        leverage=sub.leverage,
        price=ctx.price,
        signal=ctx.signal,
    )
    limit = sub.entry_order_type == StrategySubscription.EntryOrderType.LIMIT
    bump = sub.min_order_policy == StrategySubscription.MinOrderPolicy.BUMP_TO_MINIMUM
    return OrderRequest(
        symbol=trade.symbol,
        side=entry_side(trade.side),
        quantity=quantity,
        client_order_id=trade.client_order_id,
        reference_price=ctx.price,
        reference_time=ctx.time,
        type="limit" if limit else "market",
        price=(ctx.signal.price or ctx.price) if limit else None,
        leverage=sub.leverage,
        margin_mode=sub.margin_mode,
        bump_max_notional=sub.capital * sub.leverage if bump else None,
    )


Venue = tuple[str, bool]  # (exchange, sandbox)


def _ids(subs: Iterable[StrategySubscription]) -> list[int]:
    """Primary keys for an ``__in`` lookup: model instances cost the ORM a normalization each,
    a measurable part of a 1,000-subscriber batch's queries."""
    return [s.pk for s in subs]


@dataclass(frozen=True)
class _Batch:
    """What an entry batch read once for all its subscribers."""

    holding: set[int]  # subscriptions holding the signal's side already
    moved: dict[Venue, str]  # venues whose market left the price band
    prices: dict[Venue, Decimal | None]  # each venue's last price, when it was needed
    guards: EntryGuards  # the followers' protections


def _entry_prepare(
    ctx: _EntryContext, sub: StrategySubscription, trade: Trade, batch: _Batch
) -> tuple[str, OrderRequest | None, Tripped | None]:
    """The order to send for this subscriber, or the reason none is sent (and the follower's
    protection that held it back, if one did)."""
    reason = _skip_reason(ctx, sub, trade, holding=batch.holding, moved=batch.moved)
    if reason:
        return reason, None, None
    tripped = batch.guards.before_sizing(sub)
    if tripped:
        return tripped.reason, None, tripped
    try:
        # Recorded numbers must fit their columns: skipped here, never a failed write later.
        request = _entry_request(ctx, sub, trade)
    except PositionUnfit as exc:
        return str(exc), None, None
    tripped, request = batch.guards.order(
        sub, request, market=_fill_estimate(sub, request, batch.prices)
    )
    if tripped:
        return tripped.reason, None, tripped
    return "", request, None


def _entry_prepared(
    ctx: _EntryContext, sub: StrategySubscription, trade: Trade, batch: _Batch
) -> tuple[str, OrderRequest | None, Tripped | None]:
    """``_entry_prepare``, its lines (and a failure's) with this subscriber's ids."""
    with log_context(subscription_id=sub.pk, client_order_id=trade.client_order_id):
        try:
            return _entry_prepare(ctx, sub, trade, batch)
        except Exception:
            logger.exception("entry preparation failed for subscription %s", sub.pk)
            raise


def _fill_estimate(
    sub: StrategySubscription, request: OrderRequest, prices: dict[Venue, Decimal | None]
) -> Decimal | None:
    """Where the entry would fill now, for a slippage cap: the venue's last price live, the
    paper fill (the close and the platform's slippage) on paper."""
    if sub.slippage_cap_bps is None:
        return None
    if sub.mode != StrategySubscription.Mode.LIVE:
        return paper_broker().fill_price(request)
    if sub.credential is None:
        return None
    return prices.get((sub.credential.exchange, sub.credential.is_sandbox))


def _skip_reason(
    ctx: _EntryContext,
    sub: StrategySubscription,
    trade: Trade,
    *,
    holding: set[int],
    moved: dict[tuple[str, bool], str],
) -> str:
    if sub.status != StrategySubscription.Status.ACTIVE:
        return f"subscription {sub.status}"
    if sub.pk in holding:
        return holding_reason(trade.side)
    if not ctx.fresh_only:
        return ""
    age = execution_signal_age_s(ctx.execution)
    if age > settings.SIGNAL_MAX_AGE_S:
        return f"signal is {age:.0f} s old (max {settings.SIGNAL_MAX_AGE_S:g} s)"
    if sub.mode == StrategySubscription.Mode.LIVE and sub.credential is not None:
        return moved.get((sub.credential.exchange, sub.credential.is_sandbox), "")
    return ""


def _venue_prices(
    ctx: _EntryContext, subs: Iterable[StrategySubscription]
) -> dict[Venue, Decimal | None]:
    """The last price of each (exchange, sandbox) the live subscribers trade on: one request
    per venue, whatever the number of subscribers."""
    venues = {
        (s.credential.exchange, s.credential.is_sandbox)
        for s in subs
        if s.mode == StrategySubscription.Mode.LIVE and s.credential is not None
    }
    symbol = ctx.execution.strategy.symbol
    return {
        (exchange, sandbox): live_last_price(exchange=exchange, sandbox=sandbox, symbol=symbol)
        for exchange, sandbox in venues
    }


def _price_band(ctx: _EntryContext, prices: dict[Venue, Decimal | None]) -> dict[Venue, str]:
    """Skip reasons per (exchange, sandbox) whose market moved beyond the band since the close."""
    reference = ctx.price
    moved = {}
    for (exchange, sandbox), last in prices.items():
        if last is None or reference <= 0:
            continue  # no price to compare: the exchange's own checks still apply
        change = abs(last - reference) / reference
        if change > settings.ENTRY_PRICE_BAND:
            moved[(exchange, sandbox)] = (
                f"price moved {change:.2%} from the signal's close {reference} to {last} "
                f"(band {settings.ENTRY_PRICE_BAND:.2%})"
            )
    return moved


def _enter(ctx: _EntryContext, subs: Sequence[StrategySubscription], tally: Tally) -> None:
    if not subs:
        return
    side = ENTRY_SIDE[ctx.signal.type]
    opposite = Trade.objects.filter(
        subscription_id__in=_ids(subs), status=Trade.Status.OPEN, side=OPPOSITE[side]
    ).select_related("subscription__credential")
    _exit(ctx.execution, list(opposite), reason=REVERSED, tally=tally)
    if bulk_fast():
        subs = _paper_enter(ctx, subs, tally)
        if not subs:
            return
    trades = _entry_intents(ctx, subs)
    pending = [s for s in subs if trades[s.pk].status == Trade.Status.PENDING]
    if not pending:
        return
    holding = set(
        Trade.objects.filter(subscription_id__in=_ids(pending), status=Trade.Status.OPEN, side=side)
        .exclude(execution=ctx.execution)
        .values_list("subscription_id", flat=True)
    )
    batch = _entry_batch(ctx, pending, holding)
    skipped: list[Trade] = []
    trips: list[tuple[StrategySubscription, Trade, Tripped]] = []
    specs: list[tuple[Trade, OrderPurpose, OrderRequest]] = []
    now = timezone.now()
    for sub in pending:
        trade = trades[sub.pk]
        try:
            reason, request, tripped = _entry_prepared(ctx, sub, trade, batch)
        except Exception as exc:  # one subscriber's bad data stops nobody else
            trade.status, trade.error = Trade.Status.FAILED, f"{type(exc).__name__}: {exc}"
            trade.updated_at = now
            skipped.append(trade)
            tally.failed += 1
            continue
        if reason:
            trade.status, trade.error, trade.updated_at = Trade.Status.SKIPPED, reason, now
            skipped.append(trade)
            if tripped is not None:
                trips.append((sub, trade, tripped))
        else:
            assert request is not None
            specs.append((trade, OrderPurpose.entry(), request))
    _skips_record(skipped, trips)
    intents = order_intents(ctx.execution, specs)
    by_sub = {s.pk: s for s in pending}
    legs = []
    for trade, purpose, request in specs:
        order = intents[(trade.subscription_id, purpose)]
        legs.append(
            Leg(by_sub[trade.subscription_id], trade, order, request_from_intent(order, request))
        )
    orders_settle(legs, tally, symbol=ctx.execution.strategy.symbol)
    protective_place(trade_ids=[leg.trade.pk for leg in legs], tally=tally)


def _paper_enter(
    ctx: _EntryContext, subs: Sequence[StrategySubscription], tally: Tally
) -> list[StrategySubscription]:
    """Enter the paper subscribers whose trades are not written yet in one step: each entry
    decided and filled in process (the same checks and the same paper broker as the intent
    path), then written already filled (``paper_fills``). Returns the subscribers left for the
    intent path: live ones, those whose trade existed (a redelivery), and a paper order the
    broker did not fill (refused: recorded as the intent path records a refusal)."""
    paper = [s for s in subs if s.mode != StrategySubscription.Mode.LIVE]
    if not paper:
        return list(subs)
    side = ENTRY_SIDE[ctx.signal.type]
    holding = set(
        Trade.objects.filter(subscription_id__in=_ids(paper), status=Trade.Status.OPEN, side=side)
        .exclude(execution=ctx.execution)
        .values_list("subscription_id", flat=True)
    )
    batch = _entry_batch(ctx, paper, holding)
    broker = paper_broker()
    entries: list[PaperEntry] = []
    for sub in paper:
        entry = PaperEntry(sub, _entry_trade(ctx, sub))
        try:
            reason, request, entry.tripped = _entry_prepared(ctx, sub, entry.trade, batch)
        except Exception as exc:  # one subscriber's bad data stops nobody else
            entry.trade.status = Trade.Status.FAILED
            entry.trade.error = f"{type(exc).__name__}: {exc}"
            entries.append(entry)
            continue
        if reason:
            entry.trade.status, entry.trade.error = Trade.Status.SKIPPED, reason
        else:
            assert request is not None
            result = broker.place_market_order(request)
            if not result.filled:
                continue  # rare (a quantity refused): the intent path records it
            entry.request, entry.result = request, result
        entries.append(entry)
    saved = _tally_copy(tally)
    try:
        # The positions and equity points in the fills' transaction: one commit (a disk
        # flush) for the batch instead of three, and no moment where a fill is in without
        # its position.
        with transaction.atomic():
            written, filled = paper_fills(entries=entries, tally=tally)
            opened = {
                e.subscription.pk: e.subscription for e in entries if e.subscription.pk in filled
            }
            positions_settle(
                subscriptions=opened,
                symbol=ctx.execution.strategy.symbol,
                filled=filled,
                tally=tally,
            )
    except TRANSIENT:
        raise  # the task retries; nothing was written
    except Exception:
        # A bug: nothing was written. The intent path takes the batch, and should it fail the
        # same way, it leaves the reason on the trades (``_record_batch_failure``).
        logger.exception("paper entries in one step failed for execution %s", ctx.execution.pk)
        _tally_restore(tally, saved)
        return list(subs)
    return [s for s in subs if s.pk not in written]


def _tally_copy(tally: Tally) -> Tally:
    return Tally(tally.opened, tally.closed, tally.failed, dict(tally.tripped))


def _tally_restore(tally: Tally, saved: Tally) -> None:
    """Undo what a rolled-back step counted."""
    tally.opened, tally.closed, tally.failed = saved.opened, saved.closed, saved.failed
    tally.tripped = saved.tripped


def _entry_batch(
    ctx: _EntryContext, pending: Sequence[StrategySubscription], holding: set[int]
) -> _Batch:
    """The reads the batch's checks share: venue prices (for the price band of fresh signals
    and the live slippage caps), and the history its followers' protections need."""
    capped = any(
        s.slippage_cap_bps is not None and s.mode == StrategySubscription.Mode.LIVE for s in pending
    )
    prices = _venue_prices(ctx, pending) if ctx.fresh_only or capped else {}
    return _Batch(
        holding=holding,
        moved=_price_band(ctx, prices) if ctx.fresh_only else {},
        prices=prices,
        guards=entry_guards_load(subs=pending, execution_id=ctx.execution.pk, at=ctx.time),
    )


def _skips_record(
    skipped: Sequence[Trade], trips: Sequence[tuple[StrategySubscription, Trade, Tripped]]
) -> None:
    """Write the skips still pending, and the protections' trips among them, together."""
    if not skipped:
        return
    still = _still_pending(skipped)
    with transaction.atomic():
        bulk_write([t for t in skipped if t.pk in still], ["status", "error", "updated_at"])
        trips_record(trips=[trip for trip in trips if trip[1].pk in still])


def _still_pending(trades: Sequence[Trade]) -> set[int]:
    return set(
        Trade.objects.filter(
            pk__in=[t.pk for t in trades], status=Trade.Status.PENDING
        ).values_list("pk", flat=True)
    )


# --- exits ----------------------------------------------------------------------------------
def _exit(
    execution: StrategyExecution,
    trades: Sequence[Trade],
    *,
    reason: str,
    tally: Tally,
    reasons: dict[int, str] | None = None,
    prices: dict[int, Decimal] | None = None,
) -> None:
    """Close these open trades at market (paper: at ``prices`` or the execution's close)."""
    if not trades:
        return
    ids = [t.pk for t in trades]
    # The exit claim comes first: a protective placement racing this exit either sees it and
    # stands down, or placed its orders before, and the release below sees them. A trade is
    # never exited by the execution that entered it: that claim is a close's (trades_close).
    Trade.objects.filter(pk__in=ids, status=Trade.Status.OPEN).filter(
        Q(exit_execution__isnull=True) | Q(exit_execution=execution)
    ).exclude(execution=execution).update(exit_execution=execution)
    # Stops resting on the exchange are cancelled next: a trade whose stop filled meanwhile is
    # closed (no second exit); one whose stop is in a state not known yet gets its exit held.
    waiting = protective_release(trade_ids=ids, tally=tally)
    claimed = list(
        Trade.objects.filter(pk__in=ids, status=Trade.Status.OPEN, exit_execution=execution)
        .exclude(execution=execution)
        .select_related("subscription__credential")
        .order_by("pk")
    )
    if not claimed:
        return
    reference_default = execution.close_price
    specs: list[tuple[Trade, OrderPurpose, OrderRequest]] = []
    for trade in claimed:
        purpose = OrderPurpose.exit(trade.pk)
        cid = purpose.client_order_id(
            execution_id=execution.pk, subscription_id=trade.subscription_id
        )
        trade.exit_client_order_id = cid
        trade.metadata = {**trade.metadata, "exit_reason": (reasons or {}).get(trade.pk, reason)}
        reference = (prices or {}).get(trade.pk) or reference_default or trade.entry_price
        assert reference is not None
        request = OrderRequest(
            symbol=trade.symbol,
            side=exit_side(trade.side),
            quantity=trade.quantity,
            client_order_id=cid,
            reference_price=reference,
            reference_time=execution.interval_end,
            reduce_only=True,
        )
        specs.append((trade, purpose, request))
    if bulk_fast():
        specs = _paper_exit(
            execution, specs, waiting=waiting, reason=reason, reasons=reasons, tally=tally
        )
        if not specs:
            return
    bulk_write([trade for trade, _, _ in specs], ["exit_client_order_id", "metadata"])
    intents = order_intents(execution, specs)
    legs = []
    for trade, purpose, request in specs:
        order = intents[(trade.subscription_id, purpose)]
        leg = Leg(trade.subscription, trade, order, request_from_intent(order, request))
        leg.exit_reason = (reasons or {}).get(trade.pk, reason)
        legs.append(leg)
    _exits_hold([leg for leg in legs if leg.trade.pk in waiting])
    go = [leg for leg in legs if leg.trade.pk not in waiting]
    if go:
        orders_settle(go, tally, symbol=claimed[0].symbol)


ExitSpec = tuple[Trade, OrderPurpose, OrderRequest]


def _paper_exit(
    execution: StrategyExecution,
    specs: Sequence[ExitSpec],
    *,
    waiting: set[int],
    reason: str,
    reasons: dict[int, str] | None,
    tally: Tally,
) -> list[ExitSpec]:
    """Close the claimed paper trades in one step, each filled in process by the paper broker
    as ``orders_send`` would, then written already filled (``paper_exits``). Returns the
    exits left for the intent path: live ones, and those whose intent existed (a redelivery)."""
    broker = paper_broker()
    exits: list[PaperExit] = []
    for trade, _, request in specs:
        sub = trade.subscription
        if sub.mode == StrategySubscription.Mode.LIVE or trade.pk in waiting:
            continue
        result = broker.place_market_order(request)
        if result.filled and result.average_price is not None:
            why = (reasons or {}).get(trade.pk, reason)
            exits.append(PaperExit(sub, trade, request, result, why))
    if not exits:
        return list(specs)
    saved = _tally_copy(tally)
    try:
        with transaction.atomic():  # one commit with the positions, as for the entries
            closed, filled = paper_exits(execution=execution, exits=exits, tally=tally)
            subs = {e.subscription.pk: e.subscription for e in exits if e.trade.pk in closed}
            positions_settle(
                subscriptions=subs, symbol=specs[0][0].symbol, filled=filled, tally=tally
            )
    except TRANSIENT:
        raise
    except Exception:  # a bug: nothing was written, the intent path takes them (as entries)
        logger.exception("paper exits in one step failed for execution %s", execution.pk)
        _tally_restore(tally, saved)
        return list(specs)
    return [spec for spec in specs if spec[0].pk not in closed]


EXIT_HELD = "held: protective order state unknown; sent once it is known cancelled"
MANUAL_CLOSE = "closed by hand"
DRAWDOWN_CLOSE = "max drawdown"


def _exits_hold(legs: Sequence[Leg]) -> None:
    """Record exits that cannot go out yet: never lost, sent (or skipped) by the order sync.

    Sending now could close the position twice (the stop may fill too); dropping it would
    lose the strategy's exit. The trade keeps this execution's exit claim meanwhile, so no
    other exit is sent for it.
    """
    if not legs:
        return
    now = timezone.now()
    Order.objects.filter(
        pk__in=[leg.order.pk for leg in legs], status=Order.Status.PENDING, attempts=0
    ).update(status=Order.Status.HELD, error=EXIT_HELD, updated_at=now)
    Trade.objects.filter(pk__in=[leg.trade.pk for leg in legs], status=Trade.Status.OPEN).update(
        error=f"exit {EXIT_HELD}", updated_at=now
    )
    logger.warning("exit held for trades %s", [leg.trade.pk for leg in legs])


# --- closes outside the strategy ------------------------------------------------------------
def trades_close(
    *,
    trades: Sequence[Trade],
    reason: str,
    tally: Tally,
    times: Mapping[int, datetime] | None = None,
) -> None:
    """Close these open trades at market now, outside the strategy (by hand, or for a
    protection), each under its own intent ``close:<trade>``; ``times``: the time each
    subscription's close is dated (a paper fill's), now by default.

    A close has no execution of its own: its intent belongs to the trade's entry execution,
    so the constraint every order is fenced by, unique per (execution, subscription,
    purpose), is unique per trade here. A repeated or concurrent close finds that intent and
    its claim, and sends nothing twice. The trade's exit claim is held by its entry execution
    too, which ``_exit`` never claims with: a close and a strategy exit never both hold one
    trade; the first to claim it closes it, the other stands aside.
    """
    ids = [t.pk for t in trades]
    if not ids:
        return
    own = Q(exit_execution=F("execution"))
    Trade.objects.filter(pk__in=ids, status=Trade.Status.OPEN).filter(
        Q(exit_execution__isnull=True) | own
    ).update(exit_execution=F("execution"))
    waiting = protective_release(trade_ids=ids, tally=tally)  # stops resting live go first
    claimed = list(
        Trade.objects.filter(own, pk__in=ids, status=Trade.Status.OPEN)
        .select_related("subscription__credential", "execution__strategy")
        .order_by("pk")
    )
    legs = _close_legs(claimed, reason, times or {}, waiting=waiting)
    _exits_hold([leg for leg in legs if leg.trade.pk in waiting])
    by_symbol: dict[str, list[Leg]] = defaultdict(list)
    for leg in legs:
        if leg.trade.pk not in waiting:
            by_symbol[leg.trade.symbol].append(leg)
    for symbol, go in by_symbol.items():
        orders_settle(go, tally, symbol=symbol)


def _close_legs(
    trades: Sequence[Trade], reason: str, times: Mapping[int, datetime], *, waiting: set[int]
) -> list[Leg]:
    """The intents of these claimed trades' closes (one query pair per entry execution);
    ``waiting``: the trades whose close must be held until their stops are known."""
    if not trades:
        return []
    now = timezone.now()
    # Paper closes fill at the last price each position was valued at (its last close).
    marks = dict(
        Position.objects.filter(
            subscription_id__in={t.subscription_id for t in trades}
        ).values_list("subscription_id", "mark_price")
    )
    groups: dict[int, list[tuple[Trade, OrderPurpose, OrderRequest]]] = defaultdict(list)
    for trade in trades:
        purpose = OrderPurpose.close(trade.pk)
        cid = purpose.client_order_id(
            execution_id=trade.execution_id, subscription_id=trade.subscription_id
        )
        trade.exit_client_order_id = cid
        trade.metadata = {**trade.metadata, "exit_reason": reason}
        reference = marks.get(trade.subscription_id) or trade.entry_price
        assert reference is not None  # an open trade has its entry price
        request = OrderRequest(
            symbol=trade.symbol,
            side=exit_side(trade.side),
            quantity=trade.quantity,
            client_order_id=cid,
            reference_price=reference,
            reference_time=times.get(trade.subscription_id) or now,
            reduce_only=True,
        )
        groups[trade.execution_id].append((trade, purpose, request))
    bulk_write(list(trades), ["exit_client_order_id", "metadata"])
    legs = []
    for specs in groups.values():
        intents = order_intents(specs[0][0].execution, specs)
        _closes_rearm(
            [intents[(t.subscription_id, p)] for t, p, _ in specs],
            held={t.pk for t, _, _ in specs if t.pk in waiting},
        )
        for trade, purpose, request in specs:
            order = intents[(trade.subscription_id, purpose)]
            leg = Leg(trade.subscription, trade, order, request_from_intent(order, request))
            leg.exit_reason = reason
            legs.append(leg)
    return legs


def _closes_rearm(orders: Sequence[Order], *, held: set[int]) -> None:
    """A close the exchange refused, or that was never sent, can be asked again: its intent
    goes back to pending (held, for the trades in ``held``, like any exit whose stops are in
    a state not known yet). It is known not to be on the exchange (a refused order is not
    kept there), and it is looked up by its client order id before it is resent: a trade has
    one close intent and at most one close order on the exchange."""
    final = (Order.Status.REJECTED, Order.Status.SKIPPED)
    now = timezone.now()
    for status, group in (
        (Order.Status.HELD, [o for o in orders if o.status in final and o.trade_id in held]),
        (Order.Status.PENDING, [o for o in orders if o.status in final and o.trade_id not in held]),
    ):
        if not group:
            continue
        Order.objects.filter(pk__in=[o.pk for o in group], status__in=final).update(
            status=status, error="", closed_at=None, updated_at=now
        )
        for order in group:
            order.status, order.error, order.closed_at = status, "", None


def positions_close(*, trades: Sequence[Trade], reason: str) -> Tally:
    """Close these open trades now, as one batch of its own (a close by hand, an operator's)."""
    tally = Tally()
    trades_close(trades=trades, reason=reason, tally=tally)
    _close_tripped(tally)  # realizing a loss may trip the follower's maximum drawdown
    return tally


def _close_tripped(tally: Tally) -> None:
    """Close the positions of the subscriptions whose maximum drawdown tripped in this batch
    (their followers asked for it), now that the batch has recorded its own orders."""
    while tally.tripped:
        tripped, tally.tripped = tally.tripped, {}
        trades = Trade.objects.filter(subscription_id__in=list(tripped), status=Trade.Status.OPEN)
        trades_close(trades=list(trades), reason=DRAWDOWN_CLOSE, tally=tally, times=tripped)


# --- the fan-out ----------------------------------------------------------------------------
def fanout_process(*, execution_id: int, subscription_ids: list[int]) -> FanoutOutcome:
    """Carry one execution's signal to these subscribers, in one batch."""
    execution = StrategyExecution.objects.select_related("strategy").get(pk=execution_id)
    ids = {"strategy_id": execution.strategy_id, "interval_start": execution.interval_start}
    with log_context(execution_id=execution_id, **ids), collector_paused():
        return _fanout_batch(execution, subscription_ids)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a batch without the cyclic garbage collector, and let it run once after.

    A batch keeps thousands of rows alive until it ends, so the collections it triggers find
    nothing to free, and each full one walks every object of the process (Django's, Celery's,
    ccxt's): measured, 0.2-0.5 s of a 1,000-subscriber paper batch. What the batch leaves
    behind is freed by reference counting, or by the next collection once it is on again.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fanout_batch(execution: StrategyExecution, subscription_ids: list[int]) -> FanoutOutcome:
    execution_id = execution.pk
    signal = Signal.from_json(execution.signal or {"signal": "HOLD"})
    subs = list(
        StrategySubscription.objects.filter(pk__in=subscription_ids)
        .select_related("credential")
        .order_by("pk")
    )
    tally = Tally()
    started = time.monotonic()
    try:
        if signal.type.is_entry:
            price = _market_price(execution)
            ctx = _EntryContext(execution, signal, price, execution.interval_end, fresh_only=True)
            _enter(ctx, subs, tally)
        elif signal.type.is_exit:
            held = Trade.objects.filter(
                subscription_id__in=_ids(subs),
                status=Trade.Status.OPEN,
                side=EXIT_SIDE[signal.type],
            ).select_related("subscription__credential")
            _exit(execution, list(held), reason=EXIT_SIGNAL, tally=tally)
        _close_tripped(tally)
    except TRANSIENT:
        raise  # the task retries; every step above is idempotent
    except Exception as exc:  # a bug: leave its trace on the trades, let the others go on
        logger.exception("fan-out batch failed for execution %s", execution_id)
        tally.failed += _record_batch_failure(execution, subscription_ids, exc)
    now = timezone.now()
    StrategyExecution.objects.filter(pk=execution_id).update(
        fanout_done=F("fanout_done") + len(subscription_ids),
        trades_generated=F("trades_generated") + tally.opened + tally.closed,
        first_order_at=Coalesce(F("first_order_at"), now),
        last_order_at=now,
    )
    _fanout_observe(execution, now, seconds=time.monotonic() - started)
    logger.info(
        "fan-out batch of %d: %d opened, %d closed, %d failed",
        len(subscription_ids),
        tally.opened,
        tally.closed,
        tally.failed,
    )
    return FanoutOutcome(
        processed=len(subscription_ids),
        opened=tally.opened,
        closed=tally.closed,
        failed=tally.failed,
    )


def _fanout_observe(execution: StrategyExecution, now: datetime, *, seconds: float) -> None:
    """The batch's time; and, once the last batch is in, the close to the last order."""
    market = {"exchange": execution.strategy.exchange, "resolution": execution.strategy.resolution}
    FANOUT_BATCH_DURATION.labels(**market).observe(seconds)
    if not execution.is_real_time:
        return
    # Two last batches finishing at once may both see the fan-out complete: rare, and one
    # observation too many in a histogram is harmless.
    done, total = StrategyExecution.objects.values_list("fanout_done", "fanout_total").get(
        pk=execution.pk
    )
    if done >= total:
        since_close = (now - market_to_real(execution.interval_end)).total_seconds()
        CLOSE_TO_LAST_ORDER.labels(**market).observe(since_close)


def _market_price(execution: StrategyExecution) -> Decimal:
    """What entries are sized and paper-filled at: the close the signal was made at.

    Never the strategy's own ``price``: a fill must be a price the market traded.
    """
    if execution.close_price is None:
        raise ValueError(f"execution {execution.pk} has no close price to enter at")
    return execution.close_price


def _record_batch_failure(
    execution: StrategyExecution, subscription_ids: list[int], exc: Exception
) -> int:
    """Fail what was not sent; what may have been sent is left to the order sync."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    sent = Order.objects.filter(execution=execution, attempts__gt=0).values("trade_id")
    failed = (
        Trade.objects.filter(
            execution=execution, subscription_id__in=subscription_ids, status=Trade.Status.PENDING
        )
        .exclude(pk__in=sent)
        .update(status=Trade.Status.FAILED, error=reason, updated_at=timezone.now())
    )
    Trade.objects.filter(
        subscription_id__in=subscription_ids, exit_execution=execution, status=Trade.Status.OPEN
    ).exclude(pk__in=sent).exclude(execution=execution).update(  # a close's claim: not ours
        exit_execution=None, error=reason
    )
    return failed


# --- at every candle close ------------------------------------------------------------------
def trades_check_stops(
    *, execution: StrategyExecution, open_price: Decimal, high: Decimal, low: Decimal
) -> int:
    """Candle-close housekeeping for one strategy, paper and live alike.

    Closes open trades whose stop loss or take profit the closed candle reached, at the price
    it reached them (``protective_fill``: the open when the candle gapped through, the stop
    when it touched both), values open positions at the close, and enters ``join_now``
    subscribers who joined while the strategy holds a position.
    """
    open_trades = (
        Trade.objects.filter(
            subscription__strategy_id=execution.strategy_id, status=Trade.Status.OPEN
        )
        .filter(Q(stop_loss__isnull=False) | Q(take_profit__isnull=False))
        # Stops resting on the exchange are the exchange's to trigger (the order sync
        # records them): checking them here too could close the trade twice.
        .exclude(
            pk__in=Order.objects.filter(protective_q())
            .filter(status__in=Order.ACTIVE_STATUSES)
            .values("trade_id")
        )
        .select_related("subscription__credential")
    )
    with collector_paused():
        return _check_stops(execution, open_trades, open_price=open_price, high=high, low=low)


def _check_stops(
    execution: StrategyExecution,
    open_trades: Iterable[Trade],
    *,
    open_price: Decimal,
    high: Decimal,
    low: Decimal,
) -> int:
    hits: dict[int, ProtectiveFill] = {}
    by_id = {}
    for trade in open_trades:
        hit = protective_fill(
            side=trade.side,
            stop_loss=trade.stop_loss,
            take_profit=trade.take_profit,
            open_price=open_price,
            high=high,
            low=low,
        )
        if hit is not None:
            hits[trade.pk], by_id[trade.pk] = hit, trade
    tally = Tally()
    _exit(
        execution,
        list(by_id.values()),
        reason="stop",
        tally=tally,
        reasons={pk: hit.reason for pk, hit in hits.items()},
        prices={pk: hit.price for pk, hit in hits.items()},
    )
    _mark_positions(execution, tally)
    _close_tripped(tally)
    _join_now(execution, tally)
    return tally.closed


def _mark_positions(execution: StrategyExecution, tally: Tally) -> None:
    """Value the holders' positions at the close, store the equity of those it changed, and
    check it against their maximum drawdown."""
    if execution.close_price is None:
        return
    rows = positions_mark(
        strategy_id=execution.strategy_id,
        symbol=execution.strategy.symbol,
        mark_price=execution.close_price,
    )
    points = equity_points_record(
        positions=rows,
        kind=EquityPoint.Kind.CLOSE,
        times={row.subscription_id: execution.interval_end for row in rows},
    )
    tally.tripped.update(drawdown_check(points=points))


def _join_now(execution: StrategyExecution, tally: Tally) -> None:
    """Enter subscribers with ``join_now`` who subscribed after the strategy's open entry."""
    entry = _open_strategy_entry(execution)
    if entry is None or execution.close_price is None:
        return
    signal = Signal.from_json(entry.signal or {})
    joiners = list(
        StrategySubscription.objects.filter(
            strategy_id=execution.strategy_id,
            status=StrategySubscription.Status.ACTIVE,
            join_policy=StrategySubscription.JoinPolicy.JOIN_NOW,
            created_at__gt=entry.finished_at,
        )
        .exclude(trades__execution=entry)
        .exclude(trades__status=Trade.Status.OPEN)
        .select_related("credential")
    )
    if not joiners:
        return
    try:
        signal_check_levels(
            kind=signal.type,
            market_price=execution.close_price,
            stop=signal.stop_loss,
            tp=signal.take_profit,
        )
    except InvalidSignal:
        return  # the market went through the strategy's stop or target: nothing left to join
    ctx = _EntryContext(
        entry, signal, execution.close_price, execution.interval_end, fresh_only=False
    )
    _enter(ctx, joiners, tally)


def _open_strategy_entry(execution: StrategyExecution) -> StrategyExecution | None:
    """The strategy's last entry signal, when no exit or opposite entry followed it."""
    last = (
        StrategyExecution.objects.filter(
            strategy_id=execution.strategy_id,
            status=StrategyExecution.Status.SUCCESS,
            interval_start__lt=execution.interval_start,
        )
        .select_related("strategy")
        .order_by("-interval_start")
        .first()
    )
    if last is None or not last.signal or last.finished_at is None:
        return None
    return last if SignalType(last.signal["signal"]).is_entry else None


# --- the order sync -------------------------------------------------------------------------
def orders_sync_open(*, limit: int = 500) -> int:
    """Bring live orders whose state is open or unknown in line with the exchange.

    Open orders get their fills; unknown ones (sent, no definite answer) and ones whose
    sender died are looked up by client order id: found → recorded, absent → an exit is
    resent (exits always execute), an entry too while its signal is fresh, else rejected.
    Then exits held for their protective orders are sent or skipped (``_exits_release``).
    """
    tally = Tally()
    synced = _sync_open(tally, limit=limit)
    released = _exits_release(tally, limit=limit)
    _close_tripped(tally)
    return synced + released


def _sync_open(tally: Tally, *, limit: int) -> int:
    lease = timezone.now() - timedelta(seconds=settings.ORDER_SEND_LEASE_S)
    orders = list(
        Order.objects.filter(subscription__mode=StrategySubscription.Mode.LIVE)
        .filter(
            Q(status__in=(Order.Status.OPEN, Order.Status.PARTIALLY_FILLED))
            | Q(status=Order.Status.UNKNOWN, send_token="")
            | Q(status__in=(Order.Status.PENDING, Order.Status.UNKNOWN), sent_at__lt=lease)
        )
        .select_related("subscription__credential", "trade", "execution__strategy")
        .order_by("pk")[:limit]
    )
    if not orders:
        return 0
    legs = [leg_for(order) for order in orders]
    found, resend, unusable = [], [], []
    for leg, result in zip(legs, legs_lookup(legs), strict=True):
        if result.status == OrderStatus.NOT_FOUND:
            if leg.order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED):
                continue  # we saw it on the exchange once: a lookup glitch, try next time
            resend.append(leg)
        elif (
            result.credential_failure is CredentialFailure.DECRYPT
            and leg.order.status == Order.Status.PENDING
        ):
            # Claimed by a sender that never answered, and no one can ever look it up or send
            # it with these keys: it ends here instead of staying pending forever.
            leg.result = OrderResult(
                status=OrderStatus.REJECTED, reason=f"not sent: {result.reason}"
            )
            unusable.append(leg)
        elif result.status != OrderStatus.UNKNOWN:
            leg.result = result
            found.append(leg)
    filled = orders_record(orders_reclaim(found), tally)
    filled |= orders_record(orders_claim(unusable), tally)
    filled |= _resend(resend, tally)
    entries = [leg.trade.pk for leg in found if leg.order.purpose.kind == PurposeKind.ENTRY]
    protective_place(trade_ids=entries, tally=tally)
    # A stop or take profit filled: its sibling is cancelled (an OCO's has expired already).
    stopped = Trade.objects.filter(
        pk__in=[leg.trade.pk for leg in found if leg.order.purpose.is_protective],
        status=Trade.Status.CLOSED,
    ).values_list("pk", flat=True)
    protective_release(trade_ids=list(stopped), tally=tally)
    _refresh_positions(legs, filled, tally)
    return len(found) + len(resend)


def _exits_release(tally: Tally, *, limit: int) -> int:
    """Exits held while a protective order's state was unknown: send or skip them now.

    Their trades' protective orders are cancelled again (the exit still stands). Once they
    are known final: one filled → the exchange closed the trade, the exit is skipped with
    the reason; all cancelled, expired or never placed → the exit goes out under its own
    client order id (claimed, and looked up first on any resend). Still unknown → next sync.
    """
    held = list(
        Order.objects.filter(
            subscription__mode=StrategySubscription.Mode.LIVE, status=Order.Status.HELD
        )
        .select_related("subscription__credential", "trade", "execution__strategy")
        .order_by("pk")[:limit]
    )
    if not held:
        return 0
    waiting = protective_release(trade_ids={o.trade_id for o in held}, tally=tally)
    for order in held:
        if order.trade_id not in waiting:  # re-take the claim, should a failure have freed it
            Trade.objects.filter(pk=order.trade_id, status=Trade.Status.OPEN).filter(
                Q(exit_execution__isnull=True) | Q(exit_execution_id=order.execution_id)
            ).update(exit_execution_id=order.execution_id)
    trades = Trade.objects.select_related("subscription__credential").in_bulk(
        [o.trade_id for o in held]
    )
    go: list[Leg] = []
    skip: dict[int, str] = {}
    for order in held:
        trade = trades[order.trade_id]
        if trade.status != Trade.Status.OPEN:
            by = (trade.metadata or {}).get("exit_reason", "another order")
            skip[order.pk] = f"not sent: the trade was closed by its {by} on the exchange"
        elif trade.pk in waiting:
            continue  # a protective order is still in a state not known: next sync
        elif trade.exit_execution_id != order.execution_id:
            skip[order.pk] = "not sent: another exit holds the trade"
        else:
            order.trade = trade
            go.append(leg_for(order))
    _exits_skip(skip)
    filled = orders_record(orders_send(go), tally)
    _refresh_positions([leg_for(order) for order in held], filled, tally)
    return len(go) + len(skip)


def _exits_skip(reasons: dict[int, str]) -> None:
    """Skip held exits not claimed by a sender (one being sent is that sender's to record)."""
    now = timezone.now()
    lease = now - timedelta(seconds=settings.ORDER_SEND_LEASE_S)
    for pk, reason in reasons.items():
        Order.objects.filter(pk=pk, status=Order.Status.HELD).filter(
            Q(send_token="") | Q(sent_at__lt=lease)
        ).update(status=Order.Status.SKIPPED, error=reason, closed_at=now, updated_at=now)


def _refresh_positions(legs: Sequence[Leg], filled: Fills, tally: Tally) -> None:
    """The sync spans strategies: refresh each symbol's subscribers with their own symbol."""
    by_symbol: dict[str, dict[int, StrategySubscription]] = {}
    for leg in legs:
        by_symbol.setdefault(leg.trade.symbol, {})[leg.subscription.pk] = leg.subscription
    for symbol, subscriptions in by_symbol.items():
        mine = {k: v for k, v in filled.items() if k in subscriptions}
        positions_settle(subscriptions=subscriptions, symbol=symbol, filled=mine, tally=tally)


def _resend(legs: Sequence[Leg], tally: Tally) -> Fills:
    """Intents the exchange never got: exits go out again; entries only while fresh."""
    now = timezone.now()
    go: list[Leg] = []
    drop: list[Leg] = []
    for leg in legs:
        fresh = execution_signal_age_s(leg.order.execution, now=now) <= settings.SIGNAL_MAX_AGE_S
        if leg.order.purpose.is_protective:
            drop.append(leg)  # not resent alone: the candle-close check takes over
        else:
            (go if leg.order.purpose.kind != PurposeKind.ENTRY or fresh else drop).append(leg)
    for leg in drop:
        leg.result = OrderResult(
            status=OrderStatus.REJECTED,
            reason=(
                "never reached the exchange: the stop is checked at candle close"
                if leg.order.purpose.is_protective
                else "never reached the exchange, and the signal is too old to send it now"
            ),
        )
    filled = orders_record(orders_claim(drop), tally)
    return filled | orders_record(orders_send(go), tally)


def orders_cancel_stale(*, limit: int = 500) -> int:
    """Cancel live entry orders still unfilled (or partly filled) past ENTRY_ORDER_TIMEOUT_S."""
    cutoff = timezone.now() - timedelta(seconds=settings.ENTRY_ORDER_TIMEOUT_S)
    orders = list(
        Order.objects.filter(
            subscription__mode=StrategySubscription.Mode.LIVE,
            purpose=OrderPurpose.entry(),
            status__in=(Order.Status.OPEN, Order.Status.PARTIALLY_FILLED),
            created_at__lt=cutoff,
            send_token="",
        )
        .select_related("subscription__credential", "trade", "execution__strategy")
        .order_by("pk")[:limit]
    )
    if not orders:
        return 0
    legs = [leg_for(order) for order in orders]
    done = legs_cancel(legs)
    tally = Tally()
    filled = orders_record(orders_reclaim(done), tally)
    _refresh_positions(legs, filled, tally)
    _close_tripped(tally)
    return len(done)
