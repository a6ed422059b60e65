from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.types import DecimalSpec
from strategies.models import Strategy

PRICE: DecimalSpec = {"max_digits": 30, "decimal_places": 12}


class Candle(models.Model):
    """A closed OHLCV candle. ``open_time`` is the candle's open (ccxt convention), UTC."""

    exchange = models.CharField(max_length=50)
    symbol = models.CharField(max_length=50)
    resolution = models.CharField(max_length=4)
    open_time = models.DateTimeField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    volume = models.DecimalField(max_digits=36, decimal_places=12)
    # When the closed candle reached the store: the "data available" moment of its executions.
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("exchange", "symbol", "resolution", "open_time")
        constraints = [
            models.UniqueConstraint(
                fields=("exchange", "symbol", "resolution", "open_time"), name="uniq_candle"
            )
        ]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.resolution} {self.open_time:%Y-%m-%d %H:%M}"


class StrategyExecution(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = "success", "Success"
        NO_SIGNAL = "no_signal", "No signal"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    class Trigger(models.TextChoices):
        BEAT = "beat", "Beat schedule"
        STREAM = "stream", "Candle stream"
        MANUAL = "manual", "Manual"
        REPLAY = "replay", "Replay"
        BACKFILL = "backfill", "Stream backfill"

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="executions")
    interval_start = models.DateTimeField(help_text="Open time of the candle that closed.")
    interval_end = models.DateTimeField(help_text="Close time of that candle.")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.BEAT)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    drift_ms = models.FloatField(null=True, blank=True, help_text="Candle close → start.")
    data_available_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    signal = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    logs = models.TextField(blank=True)
    # How the strategy was isolated (bwrap, rlimit, cold): operators audit weaker runs.
    sandbox_isolation = models.CharField(max_length=16, blank=True)
    settings_version = models.PositiveIntegerField(null=True, blank=True)
    code_version = models.PositiveIntegerField(null=True, blank=True)
    candles_used = models.PositiveIntegerField(default=0)
    close_price = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="Close of the candle that produced the signal."
    )
    subscriber_count = models.PositiveIntegerField(default=0)
    trades_generated = models.PositiveIntegerField(default=0)
    fanout_total = models.PositiveIntegerField(default=0)
    fanout_done = models.PositiveIntegerField(default=0)
    fanout_dispatched_at = models.DateTimeField(null=True, blank=True)
    first_order_at = models.DateTimeField(null=True, blank=True)
    last_order_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-interval_start", "-id")
        constraints = [
            # The fence: whatever races above it, one execution per (strategy, candle).
            models.UniqueConstraint(
                fields=("strategy", "interval_start"), name="uniq_execution_per_candle"
            )
        ]
        indexes = [models.Index(fields=("strategy", "status"))]

    def __str__(self) -> str:
        return f"{self.strategy_id}@{self.interval_start:%Y-%m-%d %H:%M} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.RUNNING
