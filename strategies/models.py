from __future__ import annotations

from django.conf import settings
from django.db import models

from core.time_utils import CANONICAL_RESOLUTIONS
from core.types import PRICE


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

    strategy = models.ForeignKey("Strategy", on_delete=models.CASCADE, related_name="executions")
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
        db_table = "execution_strategyexecution"  # the table predates the move to strategies
        ordering = ("-interval_start", "-id")
        constraints = [
            # The fence: whatever races above it, one execution per (strategy, candle).
            models.UniqueConstraint(
                fields=("strategy", "interval_start"), name="uniq_execution_per_candle"
            )
        ]
        indexes = [
            models.Index(fields=("strategy", "status")),
            # The operator overview counts the last hour's and day's executions by start.
            models.Index(fields=("started_at",), name="execution_started_at"),
        ]

    def __str__(self) -> str:
        return f"{self.strategy_id}@{self.interval_start:%Y-%m-%d %H:%M} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.RUNNING

    @property
    def is_real_time(self) -> bool:
        """Triggered at its candle's close (beat, stream): its delay after the close is the
        platform's latency. Manual runs and replays of past candles say nothing of it."""
        return self.trigger in (self.Trigger.BEAT, self.Trigger.STREAM)
