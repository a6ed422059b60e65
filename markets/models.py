"""The candle store's table: closed OHLCV candles of every watched market."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.types import PRICE


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
        db_table = "execution_candle"  # the table predates the markets app
        ordering = ("exchange", "symbol", "resolution", "open_time")
        constraints = [
            models.UniqueConstraint(
                fields=("exchange", "symbol", "resolution", "open_time"), name="uniq_candle"
            )
        ]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.resolution} {self.open_time:%Y-%m-%d %H:%M}"
