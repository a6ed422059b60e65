"""Resync: settle a balance or position divergence, as its subscriber or an operator asks.

* ``adopt``: the exchange is right; the platform takes its quantity. The difference is put on
  the subscription's newest open trades (added to the newest, or taken from the newest first;
  a trade taken to zero is closed at its entry price: what happened to it happened outside the
  platform), each change noted in the trade's ``metadata.resync``, and the position recomputed.
* ``close``: the platform is right; one market order of the difference (a sell of a surplus,
  a buy of a shortfall) brings the account back to it, through the exactly-once order path of
  every other order: an intent unique per (execution, subscription, purpose) with the purpose
  ``resync:<divergence>`` and the client order id ``sf-<execution>-<subscription>-r<divergence>``,
  claimed before it is sent and looked up before any resend. Asking twice sends one order.

When several subscriptions share the account's asset (see trades.reconcile), the resync of one
settles the whole difference on that one, and the divergences of the others are resolved with
it. Orders are never resynced: an unknown order is the user's to cancel on the exchange.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from trades.brokers.base import OrderRequest
from trades.models import Divergence, Order, Trade
from trades.orders import Leg, Tally, orders_record, orders_send
from trades.positions import positions_refresh
from trades.purposes import OrderPurpose

Mode = Divergence.ResyncMode
RESYNCABLE = (Divergence.Kind.BALANCE, Divergence.Kind.POSITION)
ZERO = Decimal(0)


class ResyncRefused(Exception):
    """The divergence cannot be resynced this way (the API answers 409, with why)."""


def divergence_for_resync(*, subscription_id: int, divergence_id: int | None) -> Divergence:
    """The open balance or position divergence to resync: the one named, or the only one."""
    rows = Divergence.objects.filter(
        subscription_id=subscription_id, status=Divergence.Status.OPEN, kind__in=RESYNCABLE
    )
    if divergence_id is not None:
        rows = rows.filter(pk=divergence_id)
    found = list(rows.order_by("pk")[:2])
    if not found:
        raise ResyncRefused("no open balance or position divergence to resync")
    if len(found) > 1:
        raise ResyncRefused("several divergences are open: name one with divergence_id")
    return found[0]


def divergence_resync(*, divergence: Divergence, mode: str, user: User, via: str) -> Divergence:
    """Resync the divergence (see the module); returns it, resolved unless its order is still
    out (then the next reconciliation resolves it once the account matches)."""
    if divergence.kind not in RESYNCABLE:
        raise ResyncRefused(f"a {divergence.kind} is not resynced: it is the exchange's order")
    if mode == Mode.ADOPT:
        return _adopt(divergence.pk, user=user, via=via)
    if mode == Mode.CLOSE:
        return _close(divergence, user=user, via=via)
    raise ResyncRefused(f"unknown mode {mode!r}: adopt or close")


def _difference(divergence: Divergence) -> Decimal:
    difference = divergence.difference
    if not difference:
        raise ResyncRefused("the divergence has no difference to settle")
    return difference


# --- adopt ----------------------------------------------------------------------------------
@transaction.atomic
def _adopt(divergence_id: int, *, user: User, via: str) -> Divergence:
    divergence = Divergence.objects.select_for_update().get(pk=divergence_id)
    if divergence.status != Divergence.Status.OPEN:
        raise ResyncRefused("the divergence is resolved already")
    difference = _difference(divergence)
    trades = list(
        Trade.objects.select_for_update()
        .filter(subscription_id=divergence.subscription_id, status=Trade.Status.OPEN)
        .order_by("-pk")
    )
    if not trades:
        raise ResyncRefused("no open trade to adopt the exchange's quantity into: close instead")
    held = sum((t.quantity for t in trades), ZERO)
    signed_side = -1 if trades[0].side == Trade.Side.SHORT else 1
    change = difference * signed_side
    if held + change < 0:
        raise ResyncRefused(
            "the difference is larger than this subscription's position: resync the "
            "subscriptions sharing the account first"
        )
    note = {"divergence": divergence.pk, "by": user.username, "via": via}
    _trades_adjust(trades, change, note)
    positions_refresh(subscription_ids=[divergence.subscription_id], symbol=trades[0].symbol)
    return _resolved(divergence, mode=Mode.ADOPT, user=user, via=via, order=None)


def _trades_adjust(trades: list[Trade], change: Decimal, note: dict) -> None:
    """Add ``change`` to the newest trade, or take it from the newest trades first."""
    now = timezone.now()
    remaining = change
    for trade in trades:
        before = trade.quantity
        trade.quantity = max(ZERO, before + remaining) if remaining < 0 else before + remaining
        remaining -= trade.quantity - before
        resyncs = trade.metadata.setdefault("resync", [])
        resyncs.append(
            {**note, "at": now.isoformat(), "from": str(before), "to": str(trade.quantity)}
        )
        fields = ["quantity", "metadata", "updated_at"]
        if trade.quantity == 0:
            trade.status, trade.exit_time, trade.exit_price = (
                Trade.Status.CLOSED,
                now,
                trade.entry_price,
            )
            trade.pnl = ZERO
            trade.metadata["exit_reason"] = "resync: the exchange holds none of it"
            fields += ["status", "exit_time", "exit_price", "pnl"]
        trade.save(update_fields=fields)
        if remaining == 0:
            break


def _resolved(
    divergence: Divergence, *, mode: str, user: User, via: str, order: Order | None
) -> Divergence:
    """Record the resync, and resolve the divergence with those of the same shared holding."""
    now = timezone.now()
    divergence.resync_mode, divergence.resync_by, divergence.resync_at = mode, user, now
    divergence.resync_order = order
    divergence.detail = {**divergence.detail, "resync_via": via}
    divergence.status, divergence.resolved_at = Divergence.Status.RESOLVED, now
    divergence.resolution = f"{mode} by {user.username}"
    divergence.save()
    Divergence.objects.filter(
        subscription_id__in=divergence.detail.get("shared_with", []),
        kind=divergence.kind,
        subject=divergence.subject,
        status=Divergence.Status.OPEN,
    ).update(
        status=Divergence.Status.RESOLVED,
        resolved_at=now,
        resolution=f"settled by the resync of subscription {divergence.subscription_id}",
    )
    return divergence


# --- close ----------------------------------------------------------------------------------
def _close(divergence: Divergence, *, user: User, via: str) -> Divergence:
    if divergence.status != Divergence.Status.OPEN:
        raise ResyncRefused("the divergence is resolved already")
    order, trade = _close_intent(divergence, user=user, via=via)
    if order.status in (Order.Status.PENDING, Order.Status.UNKNOWN):
        leg = Leg(divergence.subscription, trade, order, _request(order, trade))
        orders_record(orders_send([leg]), Tally())
        order.refresh_from_db()
    if order.status == Order.Status.FILLED:
        with transaction.atomic():
            return _resolved(divergence, mode=Mode.CLOSE, user=user, via=via, order=order)
    divergence.refresh_from_db()
    return divergence


def _close_intent(divergence: Divergence, *, user: User, via: str) -> tuple[Order, Trade]:
    """The resync's order intent, written once (the unique constraint is the fence)."""
    difference = _difference(divergence)
    trade = (
        Trade.objects.filter(subscription_id=divergence.subscription_id, entry_price__isnull=False)
        .select_related("subscription__credential")
        .order_by("-status", "-pk")  # an open trade first, else the newest with a fill
        .first()
    )
    if trade is None:
        raise ResyncRefused("the subscription has no trade the resync order could belong to")
    purpose = OrderPurpose.resync(divergence.pk)
    order, _ = Order.objects.get_or_create(
        execution_id=trade.execution_id,
        subscription_id=divergence.subscription_id,
        purpose=purpose,
        defaults={
            "trade": trade,
            "client_order_id": purpose.client_order_id(
                execution_id=trade.execution_id, subscription_id=divergence.subscription_id
            ),
            "symbol": divergence.symbol,
            "side": "sell" if difference > 0 else "buy",
            "amount": abs(difference),
            "reduce_only": ":" in divergence.symbol and difference * _sign(trade) > 0,
        },
    )
    Divergence.objects.filter(pk=divergence.pk).update(
        resync_mode=Mode.CLOSE, resync_by=user, resync_at=timezone.now(), resync_order=order
    )
    return order, trade


def _sign(trade: Trade) -> int:
    return -1 if trade.side == Trade.Side.SHORT else 1


def _request(order: Order, trade: Trade) -> OrderRequest:
    return OrderRequest(
        symbol=order.symbol,
        side="buy" if order.side == "buy" else "sell",
        quantity=order.amount,
        client_order_id=order.client_order_id,
        reference_price=trade.entry_price or Decimal(1),
        reference_time=order.created_at,
        reduce_only=order.reduce_only,
        type="market",
    )
