"""The batch machinery under every fan-out, stop check and sync: intents, claims, sends, results.

Exactly-once rests on the database:

* an entry is a ``Trade`` unique per (execution, subscription), and each order an ``Order``
  intent unique per (execution, subscription, purpose), both written before anything is sent,
  with a client order id derived from those ids;
* an exit is claimed on its trade (a conditional UPDATE) before its intent is written; while
  a protective order of the trade is in a state not known yet, the intent is written *held*
  (``Order.Status.HELD``) and the order sync sends or skips it once that state is known;
* a worker *claims* intents (a token and a counted attempt, one UPDATE for the batch) before
  sending them, so two workers never send one intent at once; an intent with an earlier
  attempt is looked up by client order id before it is sent again (the broker does that);
* results are recorded only on rows still held by the claim, in the state it expected;
* a failure of one credential (refused or undecryptable keys, the network) is that
  credential's: the broker's guard turns it into its orders' results, and
  ``credentials_record_failures`` records it on the credential (pausing its subscriptions when
  the keys are refused or unusable); the batch goes on for everyone else.

A batch costs a fixed number of queries whatever its size: per-subscriber work in Python,
reads and writes in bulk, and for live orders one round trip to this process's exchange hub,
where the orders go out concurrently. Paper and live differ only in ``orders_send``.

A paper entry whose trade does not exist yet skips the intent, claim, send and record round
trips (``paper_fills``, on PostgreSQL): its fill is decided in process, by the paper broker as
``orders_send`` would, before anything is written, and the trade goes in already open with
its order already filled, in one transaction. The fences hold: the trade's INSERT is the one
per (execution, subscription), and a trade found there already (a redelivery, a batch
retried) is left to the steps above, which claim its intent if it is still pending and send
it once. A crash before the commit leaves nothing; after it, everything.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.events import EventType, events_emit
from core.metrics import ORDERS
from notifications.services import Notice, notifications_record
from strategies.models import StrategyExecution
from subscriptions.models import StrategySubscription
from subscriptions.services import credential_record_failures
from trades.brokers import OrderRequest, OrderResult, OrderStatus, paper_broker
from trades.brokers.base import CredentialFailure

# Imported here, not lazily: worker processes fork after importing the tasks, so every pool
# process starts with ccxt loaded instead of paying for it on its first fan-out.
from trades.brokers.live import (
    credential_ref,
    live_cancel_many,
    live_lookup_many,
    live_place_many,
)
from trades.bulk import (
    bulk_add,
    bulk_insert_new,
    bulk_insert_values,
    bulk_insert_values_new,
    bulk_write,
)
from trades.guards import Tripped, drawdown_check, trips_record
from trades.models import Order, Trade
from trades.notices import (
    close_notice,
    entry_fill_notice,
    fill_notice,
    rejection_notice,
    trade_close_notice,
)
from trades.positions import equity_points_fills, positions_refresh
from trades.purposes import OrderPurpose, PurposeKind
from trades.sizing import realized_pnl

if TYPE_CHECKING:
    from trades.brokers.hub import CredentialRef

logger = logging.getLogger(__name__)

ORDER_STATUS = {
    OrderStatus.FILLED: Order.Status.FILLED,
    OrderStatus.PARTIALLY_FILLED: Order.Status.PARTIALLY_FILLED,
    OrderStatus.OPEN: Order.Status.OPEN,
    OrderStatus.CANCELLED: Order.Status.CANCELLED,
    OrderStatus.EXPIRED: Order.Status.EXPIRED,
    OrderStatus.REJECTED: Order.Status.REJECTED,
    OrderStatus.SKIPPED: Order.Status.SKIPPED,
    OrderStatus.UNKNOWN: Order.Status.UNKNOWN,
}
FINAL_ORDER = {
    Order.Status.FILLED,
    Order.Status.CANCELLED,
    Order.Status.EXPIRED,
    Order.Status.REJECTED,
    Order.Status.SKIPPED,
}
ORDER_FIELDS = [
    "status",
    "amount",
    "filled",
    "average_price",
    "fee",
    "fee_currency",
    "exchange_order_id",
    "error",
    "send_token",
    "acknowledged_at",
    "closed_at",
    "updated_at",
]
ENTRY_FIELDS = [
    "status",
    "quantity",
    "entry_price",
    "entry_time",
    "entry_fee",
    "exchange_order_id",
    "error",
    "updated_at",
]
EXIT_FIELDS = [
    "status",
    "exit_client_order_id",
    "exit_price",
    "exit_time",
    "exit_fee",
    "exit_exchange_order_id",
    "pnl",
    "exit_execution",
    "error",
    "metadata",
    "updated_at",
]


@dataclass
class Leg:
    """One order for one subscriber: its trade, its intent, what to send, what came back."""

    subscription: StrategySubscription
    trade: Trade
    order: Order
    request: OrderRequest
    result: OrderResult | None = None
    exit_reason: str = ""


@dataclass
class Tally:
    opened: int = 0
    closed: int = 0
    failed: int = 0
    # Subscriptions whose maximum drawdown tripped in this batch and whose follower asked for
    # their positions to be closed, with when: closed by the caller once its batch is recorded.
    tripped: dict[int, datetime] = field(default_factory=dict)


# --- sending --------------------------------------------------------------------------------
def orders_claim(legs: Sequence[Leg]) -> list[Leg]:
    """Claim the intents to send (one UPDATE); the legs of intents claimed elsewhere drop out."""
    if not legs:
        return []
    token = uuid.uuid4().hex
    now = timezone.now()
    lease = now - timedelta(seconds=settings.ORDER_SEND_LEASE_S)
    ids = [leg.order.pk for leg in legs]
    # A held exit is claimed like a pending one, by whoever found its trade's protective
    # orders known final (the exit itself, or the order sync).
    Order.objects.filter(
        pk__in=ids, status__in=(Order.Status.PENDING, Order.Status.UNKNOWN, Order.Status.HELD)
    ).filter(Q(send_token="") | Q(sent_at__lt=lease)).update(
        send_token=token, attempts=F("attempts") + 1, sent_at=now, updated_at=now
    )
    attempts = dict(
        Order.objects.filter(pk__in=ids, send_token=token).values_list("pk", "attempts")
    )
    claimed = []
    for leg in legs:
        if leg.order.pk in attempts:
            leg.order.send_token, leg.order.attempts = token, attempts[leg.order.pk]
            # A second attempt: the first may have reached the exchange, look it up first.
            leg.request = replace(leg.request, lookup_first=attempts[leg.order.pk] > 1)
            claimed.append(leg)
    return claimed


def orders_send(legs: Sequence[Leg]) -> list[Leg]:
    """Claim and send; fills ``leg.result``. Returns the legs that were sent."""
    claimed = orders_claim(legs)
    paper = [leg for leg in claimed if leg.subscription.mode != StrategySubscription.Mode.LIVE]
    live = [leg for leg in claimed if leg.subscription.mode == StrategySubscription.Mode.LIVE]
    broker = paper_broker()
    for leg in paper:
        leg.result = broker.place_market_order(leg.request)
    items = [(ref, leg.request) for ref, leg in zip(legs_credential_refs(live), live, strict=True)]
    for leg, result in zip(live, live_place_many(items), strict=True):
        leg.result = result
    return claimed


def legs_credential_refs(legs: Sequence[Leg]) -> list[CredentialRef]:
    """Each live leg's credential, resolved once per credential in the batch (resolving may
    decrypt the keys, which must happen no more than needed)."""
    refs: dict[int, CredentialRef] = {}
    for leg in legs:
        credential = leg.subscription.credential
        assert credential is not None  # the live_needs_credential constraint
        if credential.pk not in refs:
            refs[credential.pk] = credential_ref(credential)
    return [refs[leg.subscription.credential.pk] for leg in legs]  # type: ignore[union-attr]


def legs_cancel(legs: Sequence[Leg]) -> list[Leg]:
    """Cancel resting live orders; the legs whose outcome is known, with ``result`` set."""
    refs = legs_credential_refs(legs)
    items = [
        (ref, leg.request, leg.order.exchange_order_id) for ref, leg in zip(refs, legs, strict=True)
    ]
    results = live_cancel_many(items)
    credentials_record_failures(list(zip(legs, results, strict=True)))
    done = []
    for leg, result in zip(legs, results, strict=True):
        if result.status != OrderStatus.UNKNOWN:
            leg.result = result
            done.append(leg)
    return done


def legs_lookup(legs: Sequence[Leg]) -> list[OrderResult]:
    """The exchange's view of these live orders, one result per leg (``leg.result`` untouched).

    Failures of the credentials are recorded here: a failed lookup is an unknown result that
    its caller leaves for the next run, so no one else would see them.
    """
    refs = legs_credential_refs(legs)
    results = live_lookup_many([(ref, leg.request) for ref, leg in zip(refs, legs, strict=True)])
    credentials_record_failures(list(zip(legs, results, strict=True)))
    return results


def credentials_record_failures(outcomes: Sequence[tuple[Leg, OrderResult]]) -> None:
    """Record each failed credential's first failure of the batch on it; refused or
    undecryptable keys also pause its active subscriptions, with the reason.

    Best effort, after the orders' own results: the reason is on each order already, and
    nothing here may stop the batch for the other subscribers.
    """
    errors: dict[int, str] = {}
    pause: set[int] = set()
    for leg, result in outcomes:
        credential_id, failure = leg.subscription.credential_id, result.credential_failure
        if failure is None or credential_id is None or credential_id in errors:
            continue
        errors[credential_id] = _failure_reason(failure, result.reason)
        if failure.pauses:
            pause.add(credential_id)
    try:
        credential_record_failures(errors=errors, pause=pause)
    except Exception:
        logger.exception("could not record the failures of credentials %s", sorted(errors))


def _failure_reason(failure: CredentialFailure, reason: str) -> str:
    if failure is CredentialFailure.AUTH:
        return f"exchange refused the credential: {reason}"
    if failure is CredentialFailure.DECRYPT:
        return f"credential unusable: {reason}"
    return reason


# --- recording ------------------------------------------------------------------------------
def _apply_to_order(order: Order, result: OrderResult, now: datetime) -> None:
    order.status = ORDER_STATUS[result.status]
    if result.amount is not None:
        order.amount = result.amount
    order.filled = result.quantity
    order.average_price = result.average_price
    order.fee = result.fee
    order.fee_currency = result.fee_currency
    order.exchange_order_id = result.exchange_order_id or order.exchange_order_id
    order.error = result.reason
    order.send_token = ""  # released: the sync may look it up from now on
    order.acknowledged_at = result.acknowledged_at or order.acknowledged_at
    order.closed_at = now if order.status in FINAL_ORDER else None
    order.updated_at = now


def _apply_to_entry(trade: Trade, result: OrderResult, now: datetime) -> bool:
    """Returns True when the trade opened now."""
    was_pending = trade.status == Trade.Status.PENDING
    trade.updated_at = now
    if result.has_fill:
        trade.status = Trade.Status.OPEN
        trade.quantity = result.quantity
        trade.entry_price = result.average_price
        trade.entry_fee = result.fee
        trade.entry_time = trade.entry_time or result.filled_at or now
        trade.exchange_order_id = result.exchange_order_id
        trade.error = ""
        return was_pending
    if result.status in (OrderStatus.REJECTED, OrderStatus.SKIPPED):
        trade.status = Trade.Status(result.status.value)
        trade.error = result.reason
    elif result.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        trade.status = Trade.Status.CANCELLED
        trade.error = result.reason or f"entry order {result.status} unfilled"
    else:  # open and unfilled, or unknown: the sync follows it up
        trade.exchange_order_id = result.exchange_order_id or trade.exchange_order_id
        trade.error = result.reason
    return False


def _apply_to_exit(trade: Trade, result: OrderResult, reason: str, now: datetime) -> bool:
    """Returns True when the trade closed now."""
    trade.updated_at = now
    if result.status == OrderStatus.FILLED and result.average_price is not None:
        assert trade.entry_price is not None
        trade.status = Trade.Status.CLOSED
        trade.exit_price = result.average_price
        trade.exit_time = result.filled_at or now
        trade.exit_fee = result.fee
        trade.exit_exchange_order_id = result.exchange_order_id
        trade.pnl = realized_pnl(
            side=trade.side,
            quantity=trade.quantity,
            entry_price=trade.entry_price,
            exit_price=result.average_price,
            fees=trade.entry_fee + result.fee,
        ).quantize(Decimal("0.00000001"))
        trade.metadata = {**trade.metadata, "exit_reason": reason}
        trade.error = ""
        return True
    if result.status in (
        OrderStatus.REJECTED,
        OrderStatus.SKIPPED,
        OrderStatus.CANCELLED,
        OrderStatus.EXPIRED,
    ):
        # Release the claim: the next exit signal or stop check tries again.
        trade.exit_execution = None
    trade.error = result.reason
    return False


# A subscription whose trade filled in a batch -> the fill's time and price.
Fills = dict[int, tuple[datetime, Decimal]]


def orders_record(legs: Sequence[Leg], tally: Tally) -> Fills:
    """Write the results of sent legs; only rows still held by this claim are touched.

    Returns the subscriptions whose trades opened or closed now (their equity changed).
    """
    legs = [leg for leg in legs if leg.result is not None]
    filled: Fills = {}
    if not legs:
        return filled
    outcomes = [(leg, leg.result) for leg in legs if leg.result is not None]
    now = timezone.now()
    closed_pnl: dict[int, tuple[Decimal, Decimal]] = defaultdict(lambda: (Decimal(0), Decimal(0)))
    with transaction.atomic():
        held = set(
            Order.objects.select_for_update()
            .filter(pk__in=[leg.order.pk for leg in legs])
            .filter(send_token__in={leg.order.send_token for leg in legs})
            .values_list("pk", "send_token")
        )
        legs = [leg for leg in legs if (leg.order.pk, leg.order.send_token) in held]
        live_trades = _live_trades(legs)
        entries, exits, orders = [], [], []
        notices: list[Notice] = []
        announcements: list[Announcement] = []
        closed_by_exchange: set[int] = set()
        for leg in legs:
            assert leg.result is not None
            _apply_to_order(leg.order, leg.result, now)
            orders.append(leg.order)
            if leg.result.status == OrderStatus.REJECTED:
                notices.append(rejection_notice(leg))
            if leg.trade.pk not in live_trades:
                continue
            purpose = leg.order.purpose
            if purpose.kind == PurposeKind.RESYNC:
                continue  # it moves the account, not a trade: the order's row is its record
            if purpose.is_protective:
                # The exchange closed the trade: its stop or take profit filled.
                leg.exit_reason = purpose.exit_reason
                if (
                    leg.result.status == OrderStatus.FILLED
                    and leg.result.average_price
                    and leg.trade.pk not in closed_by_exchange
                ):
                    closed_by_exchange.add(leg.trade.pk)
                    leg.trade.exit_client_order_id = leg.order.client_order_id
                    leg.trade.exit_execution = None
                    _apply_to_exit(leg.trade, leg.result, leg.exit_reason, now)
                    _count_closed(leg, tally, closed_pnl)
                    announcements.append(_closed_event(leg))
                    _note_fill(filled, leg.trade, exit=True)
                    notices.append(close_notice(leg))
                    exits.append(leg.trade)
                continue
            if purpose.kind == PurposeKind.ENTRY:
                before = (leg.trade.quantity, leg.trade.entry_fee)
                if _apply_to_entry(leg.trade, leg.result, now):
                    tally.opened += 1
                    announcements.append(_filled_event(leg))
                    _note_fill(filled, leg.trade, exit=False)
                    notices.append(fill_notice(leg))
                elif leg.result.has_fill and before != (leg.trade.quantity, leg.trade.entry_fee):
                    # More of an open entry filled (a live limit order the sync follows):
                    # the position, so the equity, changed.
                    _note_fill(filled, leg.trade, exit=False, at=now)
                entries.append(leg.trade)
            else:
                if _apply_to_exit(leg.trade, leg.result, leg.exit_reason, now):
                    _count_closed(leg, tally, closed_pnl)
                    announcements.append(_closed_event(leg))
                    _note_fill(filled, leg.trade, exit=True)
                    notices.append(close_notice(leg))
                exits.append(leg.trade)
            if leg.result.status in (OrderStatus.REJECTED, OrderStatus.UNKNOWN):
                tally.failed += 1
        bulk_write(orders, ORDER_FIELDS)
        if entries:
            bulk_write(entries, ENTRY_FIELDS)
        if exits:
            bulk_write(exits, EXIT_FIELDS)
        _add_realized(closed_pnl)
        # The batch's fills, closes and rejections, in one call, with the results.
        notifications_record(notices=notices)
        events_emit(events=announcements)  # delivered together at commit
    for leg in legs:  # once committed: a rolled-back batch recorded nothing
        ORDERS.labels(exchange=_venue(leg.subscription), status=leg.order.status).inc()
    credentials_record_failures(outcomes)
    return filled


def _venue(subscription: StrategySubscription) -> str:
    credential = subscription.credential
    live = subscription.mode == StrategySubscription.Mode.LIVE and credential is not None
    return credential.exchange if live and credential is not None else "paper"


def _note_fill(filled: Fills, trade: Trade, *, exit: bool, at: datetime | None = None) -> None:
    """``at``: when the fill was seen, for a later fill of an entry (its entry time is the
    first fill's)."""
    if exit:
        at, price = trade.exit_time, trade.exit_price
    else:
        at, price = at or trade.entry_time, trade.entry_price
    if at is not None and price is not None:
        filled[trade.subscription_id] = (at, price)


def _count_closed(leg: Leg, tally: Tally, closed_pnl: dict[int, tuple[Decimal, Decimal]]) -> None:
    """A trade closed by this batch: counted, its PnL and fees added to its subscription's."""
    tally.closed += 1
    pnl, fees = closed_pnl[leg.trade.subscription_id]
    closed_pnl[leg.trade.subscription_id] = (pnl + (leg.trade.pnl or 0), fees + leg.trade.fees)


def _live_trades(legs: Sequence[Leg]) -> set[int]:
    """Trades still in the state their leg expects (locked until the batch is recorded)."""
    kinds = {leg.order.pk: leg.order.purpose.kind for leg in legs}
    entry_ids = [leg.trade.pk for leg in legs if kinds[leg.order.pk] == PurposeKind.ENTRY]
    exits = {leg.trade.pk: leg.order.execution_id for leg in legs if leg.order.purpose.is_exit}
    protected = [leg.trade.pk for leg in legs if leg.order.purpose.is_protective]
    live: set[int] = set()
    if protected:
        # A protective fill closes the trade while it is open, whoever holds its exit claim:
        # an exit is only sent once the protective orders are known final (trades.protect).
        live |= set(
            Trade.objects.select_for_update()
            .filter(pk__in=protected, status=Trade.Status.OPEN)
            .values_list("pk", flat=True)
        )
    if entry_ids:
        live |= set(
            Trade.objects.select_for_update()
            .filter(pk__in=entry_ids, status__in=(Trade.Status.PENDING, Trade.Status.OPEN))
            .filter(exit_execution__isnull=True)
            .values_list("pk", flat=True)
        )
    if exits:
        # An exit is recorded only while its execution still holds the trade's exit claim.
        claims = (
            Trade.objects.select_for_update()
            .filter(pk__in=list(exits), status=Trade.Status.OPEN)
            .values_list("pk", "exit_execution_id")
        )
        live |= {pk for pk, holder in claims if holder == exits[pk]}
    return live


def _add_realized(closed: dict[int, tuple[Decimal, Decimal]]) -> None:
    """Add realized PnL and fees to the subscriptions, in the database, in one statement."""
    bulk_add(StrategySubscription, ["realized_pnl", "fees_paid"], closed)


Announcement = tuple[EventType, dict[str, Any]]


def _filled_event(leg: Leg) -> Announcement:
    return _entry_filled_event(leg.trade)


def _entry_filled_event(trade: Trade) -> Announcement:
    return EventType.TRADE_FILLED, {
        "trade_id": trade.pk,
        "subscription_id": trade.subscription_id,
        "side": trade.side,
        "quantity": str(trade.quantity),
        "price": str(trade.entry_price),
    }


def _closed_event(leg: Leg) -> Announcement:
    return _trade_closed_event(leg.trade, leg.exit_reason)


def _trade_closed_event(trade: Trade, reason: str) -> Announcement:
    return EventType.TRADE_CLOSED, {
        "trade_id": trade.pk,
        "subscription_id": trade.subscription_id,
        "pnl": str(trade.pnl),
        "reason": reason,
    }


def orders_settle(legs: Sequence[Leg], tally: Tally, *, symbol: str) -> None:
    sent = orders_send(legs)
    filled = orders_record(sent, tally)
    positions_settle(
        subscriptions={leg.subscription.pk: leg.subscription for leg in legs},
        symbol=symbol,
        filled=filled,
        tally=tally,
    )


def positions_settle(
    *,
    subscriptions: Mapping[int, StrategySubscription],
    symbol: str,
    filled: Fills,
    tally: Tally,
) -> None:
    """Refresh the positions, valuing a fresh fill at its price, store the equity of the
    subscriptions whose trades filled (one INSERT for the batch), and check it against their
    maximum drawdown (``tally.tripped``: the positions to close).

    The equity adds no read to the batch: each point's capital, and whether its subscription
    has a maximum drawdown at all, come from the subscriptions the batch loaded. A capital
    change racing the batch writes a point of its own, which the series keeps in order.
    """
    rows = positions_refresh(
        subscription_ids=set(subscriptions),
        symbol=symbol,
        marks={sub_id: price for sub_id, (_, price) in filled.items()},
    )
    capitals = {pk: sub.capital for pk, sub in subscriptions.items()}
    points = equity_points_fills(positions=rows, filled=filled, capitals=capitals)
    guarded = [p for p in points if subscriptions[p.subscription_id].max_drawdown_pct is not None]
    tally.tripped.update(drawdown_check(points=guarded))


# --- intents --------------------------------------------------------------------------------
def order_intents(
    execution: StrategyExecution, specs: Sequence[tuple[Trade, OrderPurpose, OrderRequest]]
) -> dict[tuple[int, OrderPurpose], Order]:
    """Get or create the intents for (trade, purpose, request): one INSERT, and a read of
    those that existed already (a redelivery, a close asked again)."""
    if not specs:
        return {}
    inserted = bulk_insert_new(
        [
            Order(
                subscription_id=trade.subscription_id,
                execution=execution,
                trade=trade,
                purpose=purpose,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                amount=request.quantity,
                price=request.price,
                reduce_only=request.reduce_only,
            )
            for trade, purpose, request in specs
        ],
        key="client_order_id",
    )
    intents = {(o.subscription_id, o.purpose): o for o in inserted}
    rest = [(t, p) for t, p, _ in specs if (t.subscription_id, p) not in intents]
    if not rest:
        return intents
    orders = Order.objects.filter(
        execution=execution,
        subscription_id__in={trade.subscription_id for trade, _ in rest},
        purpose__in={purpose for _, purpose in rest},
    )
    return {**intents, **{(o.subscription_id, o.purpose): o for o in orders}}


def request_from_intent(order: Order, request: OrderRequest) -> OrderRequest:
    """An existing intent wins: a resend must be the order that may already be out there."""
    return replace(
        request,
        quantity=order.amount,
        type=order.type,
        price=order.price,
        side="buy" if order.side == "buy" else "sell",
    )


def leg_for(order: Order) -> Leg:
    trade = order.trade
    request = OrderRequest(
        symbol=order.symbol,
        side="buy" if order.side == "buy" else "sell",
        quantity=order.amount,
        client_order_id=order.client_order_id,
        reference_price=order.price or trade.entry_price or Decimal(1),
        reference_time=order.created_at,
        reduce_only=order.reduce_only,
        type=order.type,
        price=order.price,
        lookup_first=True,
    )
    reason = (trade.metadata or {}).get("exit_reason", "exit signal")
    return Leg(order.subscription, trade, order, request, exit_reason=reason)


def orders_reclaim(legs: Sequence[Leg]) -> list[Leg]:
    """Claim looked-up orders so a fan-out sending them right now is not overwritten."""
    results = {leg.order.pk: leg.result for leg in legs}
    open_ids = [
        leg.order.pk
        for leg in legs
        if leg.order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)
    ]
    token = uuid.uuid4().hex
    Order.objects.filter(pk__in=open_ids, send_token="").update(send_token=token)
    claimed = orders_claim([leg for leg in legs if leg.order.pk not in open_ids])
    for leg in legs:
        if leg.order.pk in open_ids:
            leg.order.send_token = token
    out = [leg for leg in legs if leg.order.pk in open_ids] + claimed
    for leg in out:
        leg.result = results[leg.order.pk]
    return out


# --- paper entries in one step ----------------------------------------------------------------
@dataclass
class PaperEntry:
    """One paper subscriber's entry as decided before anything is written: its trade (not
    saved yet, its status the outcome), and for a fill the order sent and the paper fill."""

    subscription: StrategySubscription
    trade: Trade
    request: OrderRequest | None = None
    result: OrderResult | None = None
    tripped: Tripped | None = None  # the follower's protection that held it back


PAPER_ORDER_FIELDS = (
    "subscription",
    "execution",
    "trade",
    "purpose",
    "client_order_id",
    "symbol",
    "side",
    "type",
    "amount",
    "price",
    "reduce_only",
    "status",
    "filled",
    "average_price",
    "fee",
    "fee_currency",
    "exchange_order_id",
    "error",
    "attempts",
    "send_token",
    "sent_at",
    "acknowledged_at",
    "created_at",
    "updated_at",
    "closed_at",
)


def paper_fill_apply(entry: PaperEntry, now: datetime) -> None:
    """Put a paper fill on its trade, as ``orders_record`` records a filled entry."""
    assert entry.result is not None and entry.result.filled
    _apply_to_entry(entry.trade, entry.result, now)


def paper_fills(*, entries: Sequence[PaperEntry], tally: Tally) -> tuple[set[int], Fills]:
    """Write these paper entries (trades filled, skipped or failed) with their filled orders,
    protections' trips, notices and events, in one transaction: one INSERT per table.

    Only trades that did not exist are written; the subscriptions whose trade was found (a
    redelivery) are left out of the answer, for the intent path. Returns the subscriptions
    written, and those whose trades opened (their fill's time and price)."""
    if not entries:
        return set(), {}
    now = timezone.now()
    for entry in entries:
        if entry.result is not None:
            paper_fill_apply(entry, now)
        entry.trade.updated_at = now
    with transaction.atomic():
        inserted = bulk_insert_new([e.trade for e in entries], key="client_order_id")
        written = {t.subscription_id for t in inserted}
        fresh = [e for e in entries if e.subscription.pk in written]
        fills = [e for e in fresh if e.result is not None]
        bulk_insert_values(
            Order,
            PAPER_ORDER_FIELDS,
            [_paper_entry_row(e, now) for e in fills],
        )
        trips_record(
            trips=[(e.subscription, e.trade, e.tripped) for e in fresh if e.tripped is not None]
        )
        notifications_record(
            notices=[entry_fill_notice(subscription=e.subscription, trade=e.trade) for e in fills]
        )
        events_emit(events=[_entry_filled_event(e.trade) for e in fills])
    tally.opened += len(fills)
    tally.failed += sum(1 for e in fresh if e.trade.status == Trade.Status.FAILED)
    _count_paper_orders(len(fills))
    filled: Fills = {}
    for entry in fills:
        _note_fill(filled, entry.trade, exit=False)
    return written, filled


def _paper_entry_row(entry: PaperEntry, now: datetime) -> tuple[object, ...]:
    assert entry.request is not None and entry.result is not None
    return _paper_order_row(
        execution_id=entry.trade.execution_id,
        trade=entry.trade,
        purpose=OrderPurpose.entry(),
        request=entry.request,
        result=entry.result,
        now=now,
    )


def _paper_order_row(
    *,
    execution_id: int,
    trade: Trade,
    purpose: OrderPurpose,
    request: OrderRequest,
    result: OrderResult,
    now: datetime,
) -> tuple[object, ...]:
    """A filled paper order's row as ``orders_record`` leaves one: sent once, answered."""
    return (
        trade.subscription_id,
        execution_id,
        trade.pk,
        str(purpose),
        request.client_order_id,
        request.symbol,
        request.side,
        request.type,
        result.amount if result.amount is not None else request.quantity,
        request.price,
        request.reduce_only,
        Order.Status.FILLED,
        result.quantity,
        result.average_price,
        result.fee,
        result.fee_currency,
        result.exchange_order_id,
        result.reason,
        1,
        "",
        now,
        result.acknowledged_at,
        now,
        now,
        now,
    )


# --- paper exits in one step ------------------------------------------------------------------
@dataclass
class PaperExit:
    """One paper trade's exit, claimed by its execution, filled in process, not written yet."""

    subscription: StrategySubscription
    trade: Trade
    request: OrderRequest
    result: OrderResult
    reason: str


def paper_exits(
    *, execution: StrategyExecution, exits: Sequence[PaperExit], tally: Tally
) -> tuple[set[int], Fills]:
    """Close these claimed paper trades at their fills in one transaction: each exit's order
    written already filled, its trade closed, the PnL added to its subscription, notices and
    events, one statement each.

    An exit is written only while its execution holds the trade's claim (the trades are
    locked first) and its intent is new; the others are left for the intent path (a
    redelivery finds its order there). Returns the trades closed, and their fills.
    """
    if not exits:
        return set(), {}
    now = timezone.now()
    closed_pnl: dict[int, tuple[Decimal, Decimal]] = defaultdict(lambda: (Decimal(0), Decimal(0)))
    with transaction.atomic():
        held = set(
            Trade.objects.select_for_update()
            .filter(
                pk__in=[e.trade.pk for e in exits],
                status=Trade.Status.OPEN,
                exit_execution=execution,
            )
            .order_by("pk")  # one locking order for every batch: no deadlock between two
            .values_list("pk", flat=True)
        )
        mine = [e for e in exits if e.trade.pk in held]
        rows = [
            _paper_order_row(
                execution_id=execution.pk,
                trade=e.trade,
                purpose=OrderPurpose.exit(e.trade.pk),
                request=e.request,
                result=e.result,
                now=now,
            )
            for e in mine
        ]
        written = bulk_insert_values_new(Order, PAPER_ORDER_FIELDS, rows, key="client_order_id")
        done = [e for e in mine if e.request.client_order_id in written]
        for e in done:
            closed = _apply_to_exit(e.trade, e.result, e.reason, now)
            assert closed  # a filled paper order at a price
            pnl, fees = closed_pnl[e.trade.subscription_id]
            closed_pnl[e.trade.subscription_id] = (pnl + (e.trade.pnl or 0), fees + e.trade.fees)
        bulk_write([e.trade for e in done], EXIT_FIELDS)
        _add_realized(closed_pnl)
        notifications_record(
            notices=[
                trade_close_notice(subscription=e.subscription, trade=e.trade, reason=e.reason)
                for e in done
            ]
        )
        events_emit(events=[_trade_closed_event(e.trade, e.reason) for e in done])
    tally.closed += len(done)
    _count_paper_orders(len(done))
    filled: Fills = {}
    for e in done:
        _note_fill(filled, e.trade, exit=True)
    return {e.trade.pk for e in done}, filled


def _count_paper_orders(count: int) -> None:
    """Count filled paper orders once committed (the caller's transaction may enclose ours)."""
    if count:
        transaction.on_commit(
            lambda: ORDERS.labels(exchange="paper", status=Order.Status.FILLED).inc(count)
        )
