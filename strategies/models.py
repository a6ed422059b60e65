from __future__ import annotations

from django.conf import settings
from django.db import models

from core.time_utils import CANONICAL_RESOLUTIONS


class Strategy(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        RETIRED = "retired", "Retired"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="strategies"
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    code = models.TextField(help_text="Python source defining generate_signal(candles, settings).")
    code_version = models.PositiveIntegerField(default=1)
    lookback = models.PositiveIntegerField(default=100)
    timeout_s = models.FloatField(default=30.0)
    exchange = models.CharField(max_length=50, help_text="A ccxt exchange id, or 'paper'.")
    symbol = models.CharField(max_length=50, help_text="ccxt unified symbol, e.g. ETH/BTC.")
    resolution = models.CharField(max_length=4, choices=[(r, r) for r in CANONICAL_RESOLUTIONS])
    settings = models.JSONField(default=dict, blank=True)
    settings_version = models.PositiveIntegerField(default=1)
    is_public = models.BooleanField(default=False)
    is_marketplace = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # Kept exact by the subscription services under a row lock; never edited by hand.
    subscriber_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "strategies"
        indexes = [models.Index(fields=("exchange", "symbol", "resolution"))]

    def __str__(self) -> str:
        return f"{self.name} ({self.exchange} {self.symbol} {self.resolution})"


class StrategyVersion(models.Model):
    """An immutable copy of a strategy's code; executions record the version they ran."""

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    code = models.TextField()
    lookback = models.PositiveIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("strategy", "-version")
        constraints = [
            models.UniqueConstraint(fields=("strategy", "version"), name="uniq_strategy_version")
        ]

    def __str__(self) -> str:
        return f"{self.strategy_id} v{self.version}"
