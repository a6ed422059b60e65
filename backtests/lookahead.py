"""Look-ahead bias: does ``generate_signals`` (one call over all rows) say, at a candle, what
``generate_signal`` says when history is cut at that candle?

A vectorised strategy sees every row at once, so a ``shift(-1)`` reads the next candle's
close and books trades no one could have made. The check runs ``generate_signal`` in one
sandbox session, fed only the candles up to each sampled one (the child never holds a later
candle), and compares the two signals as the platform would act on them. The caller owns
the session and takes the steps when it likes (between candles of its replay).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from strategies.sandbox import StepResult, StrategySession
from strategies.signals import InvalidSignal, signal_parse

ACTIVE_SAMPLE = 48  # rows where generate_signals acted: where a peek books trades
QUIET_SAMPLE = 16  # rows where it held: a peek may also hide a signal
TOLERANCE = Decimal("1e-9")  # relative, for prices computed by two float paths


class LookaheadCheck:
    """The check in steps, so that a caller may work while the strategy computes: each
    ``advance()`` takes the answer for the sampled candle sent last, compares it, and sends
    the next one. The session's lockstep rule holds as in ``step``: a candle is sent only
    once the answer for the one before is in, so the child never holds a later candle."""

    def __init__(
        self,
        *,
        session: StrategySession,
        rows: list[list[float]],
        signals: list[Any],
        first: int,
        lookback: int,
    ) -> None:
        self._session, self._rows, self._signals = session, rows, signals
        self._first, self._lookback = first, lookback
        self._sample = _sample(signals)
        self._next = 0  # index in the sample of the candle to send next
        self._sent = 0  # rows handed to the child so far
        self._pending: int | None = None  # the sampled signal index awaiting its answer
        self._found: list[dict[str, Any]] = []
        self._error = ""

    @property
    def steps(self) -> int:
        return len(self._sample)

    def advance(self) -> None:
        """Compare the pending answer (waiting for it), then send the next sampled candle."""
        if self._pending is not None:
            self._compare(self._pending, self._session.receive())
            self._pending = None
        if self._error or self._next >= len(self._sample):
            return
        i = self._sample[self._next]
        self._next += 1
        at = self._first + i
        start = max(self._sent, at - self._lookback + 1)
        failure = self._session.send(self._rows[start : at + 1])  # nothing after ``at``
        self._sent = at + 1
        if failure is not None:
            self._error = failure.error
        else:
            self._pending = i

    def advance_if_answered(self) -> None:
        """``advance()`` when it would not wait: the caller goes on working otherwise."""
        if self._pending is None or self._session.answered():
            self.advance()

    def finish(self) -> dict[str, Any]:
        """Every remaining sampled candle checked -> the verdict."""
        while self._pending is not None or (not self._error and self._next < len(self._sample)):
            self.advance()
        if self._error:
            return {"checked": self._next - 1, "disagreements": self._found, "error": self._error}
        return {"checked": len(self._sample), "disagreements": self._found}

    def _compare(self, i: int, result: StepResult) -> None:
        if not result.ok:
            self._error = result.error
            return
        at = self._first + i
        close = Decimal(str(self._rows[at][4]))
        expected, actual = _acted(self._signals[i], close), _acted(result.value, close)
        if not _same(expected, actual):
            self._found.append(
                {
                    "time_ms": int(self._rows[at][0]),
                    "generate_signals": expected,
                    "generate_signal": actual,
                }
            )


def _sample(signals: list[Any]) -> list[int]:
    active = [i for i, s in enumerate(signals) if _kind(s) != "HOLD"]
    quiet = [i for i, s in enumerate(signals) if _kind(s) == "HOLD"]
    return sorted(set(_spread(active, ACTIVE_SAMPLE)) | set(_spread(quiet, QUIET_SAMPLE)))


def _spread(items: list[int], count: int) -> list[int]:
    if len(items) <= count:
        return items
    return [items[round(k * (len(items) - 1) / (count - 1))] for k in range(count)]


def _kind(raw: Any) -> str:
    return str(raw.get("signal", "HOLD")).upper() if isinstance(raw, dict) else "HOLD"


def _acted(raw: Any, close: Decimal) -> dict[str, Any]:
    """The signal as the platform acts on it: its type and levels, or why it is invalid."""
    try:
        signal = signal_parse(raw, market_price=close)
    except InvalidSignal as exc:
        return {"signal": "INVALID", "reason": str(exc)}
    acted = signal.to_json()
    acted.pop("metadata", None)
    return acted


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys() or a.get("signal") != b.get("signal"):
        return False
    return all(_close_enough(a[k], b[k]) for k in a if k not in ("signal", "reason"))


def _close_enough(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    x, y = Decimal(a), Decimal(b)
    return abs(x - y) <= TOLERANCE * max(abs(x), abs(y))
