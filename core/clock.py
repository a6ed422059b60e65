"""The market clock: wall-clock UTC, or a replay clock shared with the exchange simulator.

A replay runs historical candles ``speed`` times faster than real time, so that tests, the demo
and benchmarks see real candle closes quickly. Every process of a replay (simulator, streamer,
workers) gets the same ``MARKET_CLOCK`` setting, ``<start ISO8601>@<speed>@<t0 unix seconds>``:
market time = start + (now - t0) * speed. Only "which candle is closed" decisions use market
time; recorded timestamps stay real, so latencies are real milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings


@dataclass(frozen=True)
class ReplayClock:
    start: datetime
    speed: float
    t0: float  # unix seconds (real) at which market time was ``start``

    def now(self, real: float | None = None) -> datetime:
        elapsed = (time.time() if real is None else real) - self.t0
        return self.start + timedelta(seconds=elapsed * self.speed)

    def to_real(self, market: datetime) -> datetime:
        seconds = self.t0 + (market - self.start).total_seconds() / self.speed
        return datetime.fromtimestamp(seconds, UTC)

    def spec(self) -> str:
        return f"{self.start.isoformat()}@{self.speed}@{self.t0}"


def replay_clock_parse(spec: str) -> ReplayClock:
    try:
        start, speed, t0 = spec.split("@")
        clock = ReplayClock(datetime.fromisoformat(start), float(speed), float(t0))
    except ValueError as exc:
        raise ValueError(f"MARKET_CLOCK must be '<start ISO>@<speed>@<t0>', got {spec!r}") from exc
    if clock.start.tzinfo is None or clock.speed <= 0:
        raise ValueError("MARKET_CLOCK needs a timezone-aware start and a positive speed")
    return clock


@lru_cache(maxsize=4)
def _clock_for(spec: str) -> ReplayClock | None:
    return replay_clock_parse(spec) if spec else None


def replay_clock() -> ReplayClock | None:
    return _clock_for(getattr(settings, "MARKET_CLOCK", ""))


def market_now() -> datetime:
    clock = replay_clock()
    return clock.now() if clock else datetime.now(UTC)


def market_to_real(market: datetime) -> datetime:
    """The real moment at which the market clock showed ``market``."""
    clock = replay_clock()
    return clock.to_real(market) if clock else market
