from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from execution.models import PRICE, StrategyExecution
from subscriptions.models import MONEY, StrategySubscription

QUANTITY = {"max_digits": 30, "decimal_places": 12}


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
