"""Deciding when a streamed candle has closed.

ccxt gives no "closed" flag: a candle is closed when a candle with a later open time arrives, or
when the exchange marks it final (Binance's kline ``x``, which ccxt drops; the streamer reads it
from the raw message). A candle that was open when the connection dropped keeps its partial
values yet looks closed by the later-open-time rule, so it is handed over *unconfirmed*: its
final values must come from REST before it is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Row = list  # [open_ms, open, high, low, close, volume]


@dataclass(frozen=True)
class ClosedCandle:
    row: Row
    confirmed: bool  # False: values may be partial, confirm over REST before storing


@dataclass
class CandleCloser:
    step_ms: int
    last_closed_ms: int | None = None  # open time of the newest candle handed over as closed
    current: Row | None = None  # the newest row seen, still open
    suspect_ms: int | None = None  # open time of the candle that was open across a disconnect
    finals: set[int] = field(default_factory=set)  # open times the exchange marked final

    def mark_final(self, open_ms: int, row: Row | None = None) -> None:
        self.finals.add(open_ms)
        if row is not None and (self.current is None or self.current[0] <= open_ms):
            self.current = list(row)

    def disconnected(self) -> None:
        if self.current is not None and self.current[0] not in self.finals:
            self.suspect_ms = self.current[0]

    def feed(self, rows: Iterable[Row]) -> list[ClosedCandle]:
        """Rows as ccxt returned them (copied); the candles that closed since the last call."""
        fresh = sorted((list(r) for r in rows if self._is_new(int(r[0]))), key=lambda r: int(r[0]))
        # The open candle we hold may be missing from a reply that starts after it.
        current = self.current
        if (
            current is not None
            and self._is_new(int(current[0]))
            and all(int(r[0]) != int(current[0]) for r in fresh)
        ):
            fresh.insert(0, current)
        closed: list[ClosedCandle] = []
        for index, row in enumerate(fresh):
            open_ms = int(row[0])
            later = index + 1 < len(fresh)
            if open_ms in self.finals or later:
                closed.append(ClosedCandle(row, confirmed=self._trusted(open_ms)))
                self.last_closed_ms = open_ms
            else:
                self.current = row
        self.finals = {ms for ms in self.finals if self._is_new(ms)}
        return closed

    def has_gap(self, rows: Iterable[Row]) -> bool:
        """True when candles between the last close and these rows were never seen (a reconnect
        after a candle closed unobserved): they must be backfilled over REST first."""
        opens = [int(r[0]) for r in rows if self._is_new(int(r[0]))]
        if self.last_closed_ms is None or not opens:
            return False
        return min(opens) > self.last_closed_ms + self.step_ms

    def _is_new(self, open_ms: int) -> bool:
        return self.last_closed_ms is None or open_ms > self.last_closed_ms

    def _trusted(self, open_ms: int) -> bool:
        if open_ms in self.finals:
            return True
        return open_ms != self.suspect_ms
