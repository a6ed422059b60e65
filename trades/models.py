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

    subscription = models.ForeignKey(
        StrategySubscription, on_delete=models.PROTECT, related_name="trades"
    )
    execution = models.ForeignKey(
        StrategyExecution, on_delete=models.PROTECT, related_name="trades"
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
    execution = models.ForeignKey(
        StrategyExecution, on_delete=models.PROTECT, related_name="orders"
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

    subscription = models.ForeignKey(
        StrategySubscription, on_delete=models.CASCADE, related_name="protection_trips"
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
