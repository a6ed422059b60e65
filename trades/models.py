from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from core.types import PRICE, DecimalSpec
from strategies.models import StrategyExecution
from subscriptions.models import MONEY, StrategySubscription
from trades.purposes import OrderPurposeField

QUANTITY: DecimalSpec = {"max_digits": 30, "decimal_places": 12}


class Trade(models.Model):
    """One subscriber's position opened by one execution's entry signal."""

    class Side(models.TextChoices):
        LONG = "long", "Long"
        SHORT = "short", "Short"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # order intent recorded, not yet confirmed
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        REJECTED = "rejected", "Rejected"  # the broker refused the order
        SKIPPED = "skipped", "Skipped"  # nothing sent, reason in `error`
        FAILED = "failed", "Failed"  # an error on our side, reason in `error`
        CANCELLED = "cancelled", "Cancelled"  # its entry order was cancelled unfilled

    # No index of their own: (subscription, status) and the unique (execution, subscription)
    # begin with them and serve every lookup by either (trades.migrations.0009).
    subscription = models.ForeignKey(
        StrategySubscription, on_delete=models.PROTECT, related_name="trades", db_index=False
    )
    execution = models.ForeignKey(
        StrategyExecution, on_delete=models.PROTECT, related_name="trades", db_index=False
    )
    exit_execution = models.ForeignKey(
        StrategyExecution,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="exit_trades",
    )
    symbol = models.CharField(max_length=50)
    side = models.CharField(max_length=5, choices=Side.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    entry_price = models.DecimalField(**PRICE, null=True, blank=True)
    entry_time = models.DateTimeField(null=True, blank=True)
    exit_price = models.DecimalField(**PRICE, null=True, blank=True)
    exit_time = models.DateTimeField(null=True, blank=True)
    stop_loss = models.DecimalField(**PRICE, null=True, blank=True)
    take_profit = models.DecimalField(**PRICE, null=True, blank=True)
    entry_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    exit_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    pnl = models.DecimalField(**MONEY, null=True, blank=True, help_text="Net of fees.")
    client_order_id = models.CharField(max_length=64, unique=True)
    exit_client_order_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    exchange_order_id = models.CharField(max_length=100, blank=True)
    exit_exchange_order_id = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            # The fence for orders: one entry per (execution, subscriber).
            models.UniqueConstraint(
                fields=("execution", "subscription"), name="uniq_trade_per_execution"
            ),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="quantity_not_negative"),
        ]
        indexes = [models.Index(fields=("subscription", "status"))]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol} ({self.status})"

    @property
    def fees(self) -> Decimal:
        return self.entry_fee + self.exit_fee


class Order(models.Model):
    """An order intent, written before anything is sent, then the order's life on the exchange.

    Unique per (execution, subscription, purpose), with a deterministic client order id: a
    retried or redelivered fan-out finds the intent, looks the order up by that id before
    sending anything again, and so never places it twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # intent written; not known to the exchange yet
        UNKNOWN = "unknown", "Unknown"  # sent, the answer was lost; reconciled by the sync
        OPEN = "open", "Open"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"
        SKIPPED = "skipped", "Skipped"  # never sent, reason in `error`
        # An exit not sent yet: a protective order of its trade is in a state not known yet
        # (or its cancel is not confirmed). The order sync sends it once they are known
        # cancelled, or skips it when one of them filled (the exchange closed the trade).
        HELD = "held", "Held"

    ACTIVE_STATUSES = ("pending", "unknown", "open", "partially_filled")

    subscription = models.ForeignKey(
        StrategySubscription, on_delete=models.PROTECT, related_name="orders"
    )
    # No index of its own: the unique (execution, subscription, purpose) begins with it.
    execution = models.ForeignKey(
        StrategyExecution, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="orders")
    purpose = OrderPurposeField(max_length=32)  # see trades.purposes
    client_order_id = models.CharField(max_length=64, unique=True)
    symbol = models.CharField(max_length=50)
    side = models.CharField(max_length=4)  # buy | sell
    type = models.CharField(max_length=10, default="market")
    amount = models.DecimalField(**QUANTITY, default=Decimal("0"))
    price = models.DecimalField(**PRICE, null=True, blank=True)
    reduce_only = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    filled = models.DecimalField(**QUANTITY, default=Decimal("0"))
    average_price = models.DecimalField(**PRICE, null=True, blank=True)
    fee = models.DecimalField(**MONEY, default=Decimal("0"))
    fee_currency = models.CharField(max_length=20, blank=True)
    exchange_order_id = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # Counted up before each send: above zero, the exchange may know the order, so it is
    # looked up by client order id before anything is sent again.
    attempts = models.PositiveSmallIntegerField(default=0)
    # Set by the worker sending it: two workers never send one intent at once (a claim older
    # than ORDER_SEND_LEASE_S belongs to a worker presumed dead and may be taken over).
    send_token = models.CharField(max_length=32, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=("execution", "subscription", "purpose"), name="uniq_order_intent"
            ),
        ]
        indexes = [models.Index(fields=("status", "created_at"))]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.amount} {self.symbol} ({self.status})"


class Position(models.Model):
    """A subscriber's net position on its strategy's symbol, kept in step with fills."""

    class Side(models.TextChoices):
        FLAT = "flat", "Flat"
        LONG = "long", "Long"
        SHORT = "short", "Short"

    subscription = models.OneToOneField(
        StrategySubscription, on_delete=models.CASCADE, related_name="position"
    )
    symbol = models.CharField(max_length=50)
    side = models.CharField(max_length=5, choices=Side.choices, default=Side.FLAT)
    quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    average_entry_price = models.DecimalField(**PRICE, null=True, blank=True)
    open_fees = models.DecimalField(**MONEY, default=Decimal("0"))
    realized_pnl = models.DecimalField(**MONEY, default=Decimal("0"), help_text="Net of fees.")
    unrealized_pnl = models.DecimalField(
        **MONEY, default=Decimal("0"), help_text="At the mark price, net of the entry fees."
    )
    fees_paid = models.DecimalField(**MONEY, default=Decimal("0"))
    mark_price = models.DecimalField(**PRICE, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=0), name="position_quantity_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol}"


class ProtectionTrip(models.Model):
    """A follower's protection that tripped: which one, when, on what figures, what it did.

    An entry it held back is one trip per trade (the unique constraint makes a retried
    fan-out record it once); a maximum drawdown is one trip per pause.
    """

    class Protection(models.TextChoices):
        MAX_DRAWDOWN = "max_drawdown", "Maximum drawdown"
        DAILY_LOSS_LIMIT = "daily_loss_limit", "Daily loss limit"
        MAX_ORDER_NOTIONAL = "max_order_notional", "Maximum notional per order"
        MAX_OPEN_TRADES = "max_open_trades", "Maximum open trades"
        COOLDOWN = "cooldown", "Cooldown after losses"
        SLIPPAGE_CAP = "slippage_cap", "Slippage cap"

    class Action(models.TextChoices):
        ENTRY_SKIPPED = "entry_skipped", "Entry skipped"
        PAUSED = "paused", "Subscription paused"
        PAUSED_AND_CLOSED = "paused_and_closed", "Subscription paused, positions closed"

    # No index of its own: trip_sub_time (subscription, created_at) begins with it.
    subscription = models.ForeignKey(
        StrategySubscription,
        on_delete=models.CASCADE,
        related_name="protection_trips",
        db_index=False,
    )
    protection = models.CharField(max_length=20, choices=Protection.choices)
    action = models.CharField(max_length=20, choices=Action.choices)
    reason = models.CharField(max_length=255)
    # The figures compared, as strings (exact decimals): e.g. {"drawdown_pct": "12.3",
    # "limit_pct": "10", "equity": "877", "peak": "1000"}.
    figures = models.JSONField(default=dict, blank=True)
    trade = models.OneToOneField(
        Trade, on_delete=models.CASCADE, null=True, blank=True, related_name="protection_trip"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=("subscription", "created_at"), name="trip_sub_time")]

    def __str__(self) -> str:
        return f"{self.protection} on subscription {self.subscription_id}: {self.action}"


class Divergence(models.Model):
    """A difference between what the platform holds for a subscription and what the exchange
    says, found by the reconciliation (trades.reconcile), kept while it lasts.

    One open row per (subscription, kind, subject): a later run that finds the difference
    again updates ``actual`` and ``last_seen_at``; a run that no longer finds it resolves it.
    A resync (adopt the exchange's quantity, or close the difference by an order) is recorded
    on it with who asked.
    """

    class Kind(models.TextChoices):
        # Spot: the account's balance of the market's base asset against the positions of the
        # credential's subscriptions holding it (their sum when several share it).
        BALANCE = "balance", "Balance"
        # Derivatives: the exchange's position in the market against the platform's, signed.
        POSITION = "position", "Position"
        # An open order with the platform's client order id prefix the platform does not know:
        # reported, never adopted.
        UNKNOWN_ORDER = "unknown_order", "Unknown order with our prefix"
        # An order the platform holds open that the exchange does not list as open.
        MISSING_ORDER = "missing_order", "Order missing on the exchange"
        # An open order on the account placed outside the platform: shown, tolerated.
        MANUAL_ORDER = "manual_order", "Manual order"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    class ResyncMode(models.TextChoices):
        ADOPT = "adopt", "Adopt the exchange's quantity"
        CLOSE = "close", "Close the difference by an order"

    subscription = models.ForeignKey(
        StrategySubscription, on_delete=models.CASCADE, related_name="divergences"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # What differs: the asset (balance), the symbol (position) or the client order id.
    subject = models.CharField(max_length=100)
    symbol = models.CharField(max_length=50)
    expected = models.DecimalField(**QUANTITY, null=True, blank=True)
    actual = models.DecimalField(**QUANTITY, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # E.g. the subscriptions sharing the credential and asset, the order as the exchange has it.
    detail = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=255, blank=True)
    resync_mode = models.CharField(max_length=5, choices=ResyncMode.choices, blank=True)
    resync_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resync_at = models.DateTimeField(null=True, blank=True)
    resync_order = models.ForeignKey(
        Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ("-last_seen_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=("subscription", "kind", "subject"),
                condition=Q(status="open"),
                name="uniq_open_divergence",
            )
        ]
        indexes = [models.Index(fields=("subscription", "status"), name="divergence_sub_status")]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} on subscription {self.subscription_id} ({self.status})"

    @property
    def difference(self) -> Decimal | None:
        """The exchange's figure minus the platform's: above zero the account holds more."""
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected
