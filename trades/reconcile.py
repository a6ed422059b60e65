"""Reconciliation: the exchange is the truth; what the platform holds is compared with it.

For every live credential (a batch per task, every request rate-limited through the fan-out's
shared limiter) the account is read through ccxt: the balance (spot), the positions
(derivatives) and the open orders of the markets its subscriptions trade. Each difference with
the platform's ``Position``s and open ``Order``s is a ``Divergence`` on the subscription, kept
while it lasts (first seen, last seen, the latest figures) and resolved when a run no longer
finds it. A new divergence is an event and a notification, except a manual order (shown only).

* **Spot balance**: the account's total (free + in orders) of each market's base asset against
  the sum of the positions of the credential's subscriptions on markets with that base. Several
  subscriptions sharing one credential and one asset share one account balance: the platform
  compares the *sum* of their positions with it and records the difference on *each* of them
  (``detail.shared_with`` names the others), since it cannot know whose it is; a resync of one
  of them settles the whole difference on that one. A base asset that is also the quote of
  another of the credential's markets is not compared (its balance holds that market's capital).
* **Derivatives position**: the exchange's signed position in the market against the sum of the
  platform's signed positions, likewise.
* **Orders**: an open order carrying the platform's client order id prefix (``sf-``) that the
  platform does not know is reported (never adopted: the platform cannot tell what it is for);
  an open order without the prefix is the user's own (a manual trade on the same account) and
  is shown, not fought; an order the platform holds open that the exchange does not list is
  reported once it has not changed for ``RECONCILE_ORDER_GRACE_S``.

Balances and positions of subscriptions with an order in flight (pending or unknown) are left
for the next run: the exchange and the platform are between two states.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.events import EventType, event_emit
from markets.symbols import symbol_quote
from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import credential_record_failures
from trades.brokers.account import AccountQuery, AccountSnapshot, ExchangeOrder, live_accounts_fetch
from trades.brokers.live import credential_ref
from trades.custody import live_credentials
from trades.models import Divergence, Order, Position, Trade

Kind = Divergence.Kind
Status = StrategySubscription.Status
CLIENT_ID_PREFIX = "sf-"
IN_FLIGHT = (Order.Status.PENDING, Order.Status.UNKNOWN, Order.Status.HELD)
OPEN_ORDER = (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)
NOT_NOTIFIED = (Kind.MANUAL_ORDER,)
ZERO = Decimal(0)
Key = tuple[int, str, str]  # (subscription, kind, subject)


@dataclass(frozen=True)
class Finding:
    subscription_id: int
    kind: str
    subject: str
    symbol: str
    expected: Decimal | None
    actual: Decimal | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.subscription_id, self.kind, self.subject)


@dataclass
class ReconcileOutcome:
    credentials: int = 0
    requests: int = 0
    failed: int = 0
    opened: int = 0
    updated: int = 0
    resolved: int = 0


@dataclass
class _Account:
    """One credential's side of the comparison: its subscriptions and what they hold."""

    credential: BrokerCredential
    subs: list[StrategySubscription]
    positions: dict[int, Decimal]  # subscription -> signed quantity
    busy: set[int]  # subscriptions with an order in flight
    open_orders: list[Order]
    known_ids: set[str] = field(default_factory=set)  # client order ids the platform knows

    def query(self) -> AccountQuery:
        spot = sorted({s.strategy.symbol for s in self.subs if ":" not in s.strategy.symbol})
        derivatives = sorted({s.strategy.symbol for s in self.subs if ":" in s.strategy.symbol})
        return AccountQuery(
            spot_symbols=tuple(spot), derivative_symbols=tuple(derivatives), balance=bool(spot)
        )


def reconcile_credentials(*, credential_ids: Sequence[int]) -> ReconcileOutcome:
    """Reconcile these credentials' accounts with the platform (see the module)."""
    accounts = _accounts(credential_ids)
    items = [(credential_ref(a.credential), a.query()) for a in accounts]
    snapshots = live_accounts_fetch(items)
    outcome = ReconcileOutcome(credentials=len(accounts))
    errors: dict[int, str] = {}
    findings: list[Finding] = []
    checked: list[int] = []
    held_back: set[Key] = set()
    for account, snapshot in zip(accounts, snapshots, strict=True):
        outcome.requests += snapshot.requests
        if not snapshot.ok:
            errors[account.credential.pk] = snapshot.error
            continue
        _known_ids(account, snapshot.open_orders)
        found, skipped = account_compare(account, snapshot, now=timezone.now())
        findings += found
        held_back |= skipped
        checked += [s.pk for s in account.subs]
    pause = {
        a.credential.pk
        for a, snap in zip(accounts, snapshots, strict=True)
        if snap.failure is not None and snap.failure.pauses
    }
    credential_record_failures(errors=errors, pause=pause)
    outcome.failed = len(errors)
    _record(findings, checked=checked, held_back=held_back, outcome=outcome)
    return outcome


def _accounts(credential_ids: Sequence[int]) -> list[_Account]:
    credentials = list(live_credentials().filter(pk__in=list(credential_ids)))
    subs = list(
        StrategySubscription.objects.filter(
            credential__in=credentials,
            mode=StrategySubscription.Mode.LIVE,
            status__in=(Status.ACTIVE, Status.PAUSED),
        )
        .select_related("strategy")
        .order_by("pk")
    )
    ids = [s.pk for s in subs]
    positions = {
        sub_id: qty if side != Position.Side.SHORT else -qty
        for sub_id, side, qty in Position.objects.filter(subscription_id__in=ids).values_list(
            "subscription_id", "side", "quantity"
        )
    }
    orders = list(
        Order.objects.filter(subscription_id__in=ids, status__in=(*OPEN_ORDER, *IN_FLIGHT))
    )
    busy = {o.subscription_id for o in orders if o.status in IN_FLIGHT}
    owners = {s.pk: s.credential_id for s in subs}
    by_credential: dict[int, list[StrategySubscription]] = defaultdict(list)
    for sub in subs:
        by_credential[sub.credential_id or 0].append(sub)
    return [
        _Account(
            credential=c,
            subs=by_credential[c.pk],
            positions={s.pk: positions.get(s.pk, ZERO) for s in by_credential[c.pk]},
            busy=busy & {s.pk for s in by_credential[c.pk]},
            open_orders=[
                o for o in orders if o.status in OPEN_ORDER and owners[o.subscription_id] == c.pk
            ],
        )
        for c in credentials
        if by_credential[c.pk]
    ]


def _known_ids(account: _Account, orders: Iterable[ExchangeOrder]) -> None:
    """Which of the exchange's client order ids with our prefix the platform has a row for."""
    ours = {o.client_order_id for o in orders if o.client_order_id.startswith(CLIENT_ID_PREFIX)}
    if not ours:
        return
    account.known_ids = set(
        Order.objects.filter(client_order_id__in=ours).values_list("client_order_id", flat=True)
    ) | set(
        Trade.objects.filter(client_order_id__in=ours).values_list("client_order_id", flat=True)
    )


# --- comparing --------------------------------------------------------------------------------
def account_compare(
    account: _Account, snapshot: AccountSnapshot, *, now: datetime
) -> tuple[list[Finding], set[Key]]:
    """The findings on one account, and the keys not compared this run (held back)."""
    findings: list[Finding] = []
    held_back: set[Key] = set()
    for group in _holding_groups(account):
        found, skipped = _compare_group(account, snapshot, group)
        findings += found
        held_back |= skipped
    findings += _order_findings(account, snapshot.open_orders, now=now)
    return findings, held_back


@dataclass(frozen=True)
class _Group:
    kind: str
    subject: str  # the asset (spot) or the symbol (derivatives)
    subs: tuple[StrategySubscription, ...]


def _holding_groups(account: _Account) -> list[_Group]:
    spot: dict[str, list[StrategySubscription]] = defaultdict(list)
    derivatives: dict[str, list[StrategySubscription]] = defaultdict(list)
    for sub in account.subs:
        symbol = sub.strategy.symbol
        if ":" in symbol:
            derivatives[symbol].append(sub)
        else:
            spot[symbol.split("/")[0]].append(sub)
    quotes = {symbol_quote(s.strategy.symbol) for s in account.subs}
    return [
        _Group(Kind.BALANCE, asset, tuple(subs))
        for asset, subs in spot.items()
        if asset not in quotes  # its balance holds another market's capital
    ] + [_Group(Kind.POSITION, symbol, tuple(subs)) for symbol, subs in derivatives.items()]


def _compare_group(
    account: _Account, snapshot: AccountSnapshot, group: _Group
) -> tuple[list[Finding], set[Key]]:
    keys = {(s.pk, group.kind, group.subject) for s in group.subs}
    if any(s.pk in account.busy for s in group.subs):
        return [], keys
    expected = sum((account.positions[s.pk] for s in group.subs), ZERO)
    source = snapshot.balances if group.kind == Kind.BALANCE else snapshot.positions
    actual = source.get(group.subject, ZERO)
    if _within_tolerance(expected, actual):
        return [], set()
    shared = [s.pk for s in group.subs]
    return [
        Finding(
            subscription_id=s.pk,
            kind=group.kind,
            subject=group.subject,
            symbol=s.strategy.symbol,
            expected=expected,
            actual=actual,
            detail={
                "subscription_quantity": str(account.positions[s.pk]),
                "shared_with": [pk for pk in shared if pk != s.pk],
            },
        )
        for s in group.subs
    ], set()


def _within_tolerance(expected: Decimal, actual: Decimal) -> bool:
    scale = max(abs(expected), abs(actual))
    return abs(actual - expected) <= scale * settings.RECONCILE_TOLERANCE


def _order_findings(
    account: _Account, orders: Sequence[ExchangeOrder], *, now: datetime
) -> list[Finding]:
    findings = [_exchange_order_finding(account, o) for o in orders]
    on_exchange = {o.client_order_id for o in orders}
    grace = now - timedelta(seconds=settings.RECONCILE_ORDER_GRACE_S)
    for order in account.open_orders:
        if order.client_order_id not in on_exchange and order.updated_at < grace:
            findings.append(
                Finding(
                    subscription_id=order.subscription_id,
                    kind=Kind.MISSING_ORDER,
                    subject=order.client_order_id,
                    symbol=order.symbol,
                    expected=order.amount - order.filled,
                    actual=None,
                    detail={"order_id": order.pk, "status": order.status},
                )
            )
    return [f for f in findings if f is not None]


def _exchange_order_finding(account: _Account, order: ExchangeOrder) -> Finding | None:
    ours = order.client_order_id.startswith(CLIENT_ID_PREFIX)
    if ours and order.client_order_id in account.known_ids:
        return None
    return Finding(
        subscription_id=_owner(account, order),
        kind=Kind.UNKNOWN_ORDER if ours else Kind.MANUAL_ORDER,
        subject=order.client_order_id if ours else f"order {order.exchange_order_id}",
        symbol=order.symbol,
        expected=None,
        actual=order.amount - order.filled,
        detail={
            "client_order_id": order.client_order_id,
            "exchange_order_id": order.exchange_order_id,
            "side": order.side,
            "amount": str(order.amount),
            "filled": str(order.filled),
            "price": None if order.price is None else str(order.price),
        },
    )


def _owner(account: _Account, order: ExchangeOrder) -> int:
    """The subscription an exchange order is shown on: the one its client order id names
    (``sf-<execution>-<subscription>-…``) when it is one of this account's, else the first on
    the order's market, else the account's first."""
    parts = order.client_order_id.split("-")
    ids = {s.pk for s in account.subs}
    if len(parts) >= 3 and parts[2].isdigit() and int(parts[2]) in ids:
        return int(parts[2])
    on_market = [s.pk for s in account.subs if s.strategy.symbol == order.symbol]
    return (on_market or [s.pk for s in account.subs])[0]


# --- recording --------------------------------------------------------------------------------
def _record(
    findings: Sequence[Finding],
    *,
    checked: Sequence[int],
    held_back: set[Key],
    outcome: ReconcileOutcome,
) -> None:
    now = timezone.now()
    with transaction.atomic():
        # Two runs over the same subscriptions (a slow batch overlapping the next beat run)
        # record one after the other: the second finds the first's rows and updates them.
        list(
            StrategySubscription.objects.select_for_update()
            .filter(pk__in=list(checked))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        rows = {
            (d.subscription_id, d.kind, d.subject): d
            for d in Divergence.objects.select_for_update().filter(
                subscription_id__in=list(checked), status=Divergence.Status.OPEN
            )
        }
        new: list[Divergence] = []
        for f in findings:
            row = rows.pop(f.key, None)
            if row is None:
                new.append(_divergence(f, now))
                continue
            row.expected, row.actual, row.detail, row.last_seen_at = (
                f.expected,
                f.actual,
                f.detail,
                now,
            )
            row.save(update_fields=["expected", "actual", "detail", "last_seen_at"])
            outcome.updated += 1
        gone = [row.pk for key, row in rows.items() if key not in held_back]
        outcome.resolved = Divergence.objects.filter(pk__in=gone).update(
            status=Divergence.Status.RESOLVED,
            resolved_at=now,
            resolution="no longer found on the exchange",
        )
        created = Divergence.objects.bulk_create(new)
        outcome.opened = len(created)
        _announce([d for d in created if d.kind not in NOT_NOTIFIED])


def _divergence(f: Finding, now: datetime) -> Divergence:
    return Divergence(
        subscription_id=f.subscription_id,
        kind=f.kind,
        subject=f.subject,
        symbol=f.symbol,
        expected=f.expected,
        actual=f.actual,
        detail=f.detail,
        first_seen_at=now,
        last_seen_at=now,
    )


def _announce(divergences: Sequence[Divergence]) -> None:
    """An event and a notification per new divergence (in the recording transaction)."""
    if not divergences:
        return
    users = dict(
        StrategySubscription.objects.filter(
            pk__in={d.subscription_id for d in divergences}
        ).values_list("pk", "user_id")
    )
    notifications_record(
        notices=[
            Notice(
                user_id=users[d.subscription_id],
                event=NotificationEvent.DIVERGENCE_FOUND,
                key=f"divergence:{d.pk}",
                payload=divergence_payload(d),
            )
            for d in divergences
        ]
    )
    for d in divergences:
        event_emit(EventType.DIVERGENCE_FOUND, **divergence_payload(d))


def divergence_payload(d: Divergence) -> dict[str, Any]:
    """What a subscriber is told of a divergence on their own subscription."""
    return {
        "divergence_id": d.pk,
        "subscription_id": d.subscription_id,
        "kind": d.kind,
        "subject": d.subject,
        "symbol": d.symbol,
        "expected": None if d.expected is None else str(d.expected),
        "actual": None if d.actual is None else str(d.actual),
        "since": d.first_seen_at.isoformat(),
    }
