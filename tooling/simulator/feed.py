"""Prices for the simulator, read from the platform's candle store (execution.Candle)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from core.time_utils import resolution_to_timedelta

Row = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]  # open_ms, o, h, l, c, v


@dataclass
class Series:
    resolution: str
    step_ms: int
    rows: list[Row] = field(default_factory=list)
    opens: list[int] = field(default_factory=list)  # rows' open times, for bisect


class CandleFeed:
    """Candles per symbol, kept in memory and topped up from the database on ``refresh``.

    The clock decides which candle is "current": the last one closed at or before it. Without a
    clock the newest stored candle is current, which is the candle a fresh signal was made on,
    so a market order fills where the paper broker would.
    """

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.series: dict[str, Series] = {}  # symbol -> finest resolution stored
        self.clock_ms: int | None = None  # a fixed clock, set through the admin API
        # A moving clock (e.g. a replay clock) takes precedence over ``clock_ms``.
        self.clock: Callable[[], int | None] | None = None

    def now_ms(self) -> int | None:
        return self.clock() if self.clock is not None else self.clock_ms

    def reset(self) -> None:
        self.series.clear()
        self.clock_ms = None

    def refresh(self) -> int:
        from markets.models import Candle  # the simulator runs inside Django

        added = 0
        pairs = (
            Candle.objects.filter(exchange=self.exchange)
            .values_list("symbol", "resolution")
            .distinct()
        )
        finest: dict[str, str] = {}
        for symbol, resolution in pairs:
            current = finest.get(symbol)
            if current is None or resolution_to_timedelta(resolution) < resolution_to_timedelta(
                current
            ):
                finest[symbol] = resolution
        for symbol, resolution in finest.items():
            series = self.series.get(symbol)
            if series is None or series.resolution != resolution:
                step = int(resolution_to_timedelta(resolution).total_seconds() * 1000)
                series = self.series[symbol] = Series(resolution, step)
            last = series.rows[-1][0] if series.rows else -1
            rows = Candle.objects.filter(
                exchange=self.exchange, symbol=symbol, resolution=resolution
            ).order_by("open_time")
            for t, o, h, lo, c, v in rows.values_list(
                "open_time", "open", "high", "low", "close", "volume"
            ):
                ms = int(t.timestamp() * 1000)
                if ms > last:
                    series.rows.append((ms, o, h, lo, c, v))
                    series.opens.append(ms)
                    added += 1
        return added

    def current(self, symbol: str) -> Row | None:
        series = self.series.get(symbol)
        if not series or not series.rows:
            return None
        now = self.now_ms()
        if now is None:
            return series.rows[-1]
        # The last candle that closed at or before the clock.
        index = bisect.bisect_right(series.opens, now - series.step_ms) - 1
        return series.rows[index] if index >= 0 else None

    def klines(self, symbol: str, *, start: int | None, end: int | None, limit: int) -> list[Row]:
        series = self.series.get(symbol)
        if not series:
            return []
        rows = [
            r
            for r in series.rows
            if (start is None or r[0] >= start) and (end is None or r[0] <= end)
        ]
        now = self.now_ms()
        if now is not None:
            rows = [r for r in rows if r[0] + series.step_ms <= now]
        return rows[:limit] if start is not None else rows[-limit:]
