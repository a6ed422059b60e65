"""A backtest and its trades: records of their own, apart from every live or paper record."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from core.types import PRICE
from subscriptions.models import MONEY
from trades.models import QUANTITY


class Backtest(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Method(models.TextChoices):
        PER_CANDLE = "per_candle", "generate_signal at every close"
        VECTORISED = "vectorised", "generate_signals once, verified on a sample"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="backtests"
    )
    # Set when a published strategy was tested; its code is never copied here (it may be
    # private). Code a user sent is kept: it is theirs.
    strategy = models.ForeignKey(
        "strategies.Strategy",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="backtests",
    )
    code_version = models.PositiveIntegerField(null=True, blank=True)
    code = models.TextField(blank=True)
    strategy_settings = models.JSONField(default=dict, blank=True)
    exchange = models.CharField(max_length=50)
    symbol = models.CharField(max_length=50)
    resolution = models.CharField(max_length=10)
    start = models.DateTimeField(help_text="Open time of the first traded candle.")
    end = models.DateTimeField(help_text="Close time of the last traded candle.")
    lookback = models.PositiveIntegerField(default=0)
    capital = models.DecimalField(**MONEY)
    risk_per_trade = models.DecimalField(max_digits=6, decimal_places=5)
    leverage = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("1"))
    fee_bps = models.DecimalField(max_digits=8, decimal_places=3)
    slippage_bps = models.DecimalField(max_digits=8, decimal_places=3)
    method = models.CharField(max_length=12, choices=Method.choices, default=Method.PER_CANDLE)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    candles_total = models.PositiveIntegerField(default=0)
    candles_done = models.PositiveIntegerField(default=0)
    # Results, written once with status done (never shown half-written).
    metrics = models.JSONField(default=dict, blank=True)
    series = models.JSONField(default=dict, blank=True)  # times, closes, equity
    skips = models.JSONField(default=list, blank=True)
    gaps = models.JSONField(default=list, blank=True)
    lookahead = models.JSONField(default=dict, blank=True)
    sandbox_isolation = models.CharField(max_length=10, blank=True)
    logs = models.TextField(blank=True, help_text="What the strategy printed, capped.")

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"backtest #{self.pk} {self.exchange} {self.symbol} {self.resolution}"

    @property
    def progress(self) -> float:
        return self.candles_done / self.candles_total if self.candles_total else 0.0


class BacktestTrade(models.Model):
    class Side(models.TextChoices):
        LONG = "long", "Long"
        SHORT = "short", "Short"

    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="trades")
    side = models.CharField(max_length=5, choices=Side.choices)
    quantity = models.DecimalField(**QUANTITY)
    entry_time = models.DateTimeField()
    entry_price = models.DecimalField(**PRICE)
    entry_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    stop_loss = models.DecimalField(**PRICE, null=True, blank=True)
    take_profit = models.DecimalField(**PRICE, null=True, blank=True)
    exit_time = models.DateTimeField(null=True, blank=True)
    exit_price = models.DecimalField(**PRICE, null=True, blank=True)
    exit_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    pnl = models.DecimalField(**MONEY, null=True, blank=True, help_text="Net of fees.")
    exit_reason = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["entry_time", "id"]
        constraints = [
            models.UniqueConstraint(fields=["backtest", "entry_time"], name="uniq_backtest_entry")
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} @ {self.entry_price}"


class StrategyRecord(models.Model):
    """A strategy's track record: a reference paper account that follows every real-time
    signal from the strategy's first execution with unit capital, so the record is the
    strategy's own, whoever subscribed, and is never rewritten by replays of past candles."""

    strategy = models.OneToOneField(
        "strategies.Strategy", on_delete=models.CASCADE, related_name="record"
    )
    started_at = models.DateTimeField(null=True, blank=True, help_text="First close followed.")
    last_close = models.DateTimeField(null=True, blank=True, help_text="Last close followed.")
    realized = models.DecimalField(**MONEY, default=Decimal("0"))
    # The open position, as a SimTrade's fields (null when flat).
    position = models.JSONField(null=True, blank=True)

    # Figures for the listing, refreshed periodically from the series (None: undefined yet).
    return_7d_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    return_30d_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    return_90d_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    return_total_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    max_drawdown_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    sharpe = models.FloatField(null=True, blank=True)
    win_rate_pct = models.DecimalField(max_digits=8, decimal_places=4, null=True, blank=True)
    trades = models.PositiveIntegerField(default=0)
    subscribers = models.PositiveIntegerField(default=0)
    figures_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"record of strategy #{self.strategy_id}"


class StrategyRecordDay(models.Model):
    """One UTC day of a record: its closes' points as parallel arrays, and the trades closed."""

    record = models.ForeignKey(StrategyRecord, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    times = models.JSONField(default=list)  # close times, ms since the epoch
    closes = models.JSONField(default=list)  # close prices, decimal strings
    equity = models.JSONField(default=list)  # equity at each close, decimal strings
    trades = models.JSONField(default=list)  # trades closed that day, SimTrade fields

    class Meta:
        ordering = ["day"]
        constraints = [models.UniqueConstraint(fields=["record", "day"], name="uniq_record_day")]

    def __str__(self) -> str:
        return f"{self.record} on {self.day}"
