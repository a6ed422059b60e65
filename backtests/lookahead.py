"""Look-ahead bias: does ``generate_signals`` (one call over all rows) say, at a candle, what
``generate_signal`` says when history is cut at that candle?

A vectorised strategy sees every row at once, so a ``shift(-1)`` reads the next candle's
close and books trades no one could have made. The check runs ``generate_signal`` in one
sandbox session, fed only the candles up to each sampled one (the child never holds a later
candle), and compares the two signals as the platform would act on them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from strategies.sandbox import strategy_session
from strategies.signals import InvalidSignal, signal_parse

ACTIVE_SAMPLE = 48  # rows where generate_signals acted: where a peek books trades
QUIET_SAMPLE = 16  # rows where it held: a peek may also hide a signal
TOLERANCE = Decimal("1e-9")  # relative, for prices computed by two float paths


def lookahead_check(
    *,
    rows: list[list[float]],
    signals: list[Any],
    first: int,
    lookback: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """``signals[i]`` is generate_signals' answer for ``rows[first + i]``; returns what was
    checked and every disagreement (candle, both signals), or the error that stopped it."""
    sample = _sample(signals)
    found: list[dict[str, Any]] = []
    with strategy_session(history=[], lookback=lookback, **options) as session:
        sent = 0
        for i in sample:
            at = first + i
            start = max(sent, at - lookback + 1)
            result = session.step(rows[start : at + 1])  # the child has nothing after ``at``
            sent = at + 1
            if not result.ok:
                return {"checked": len(found), "disagreements": found, "error": result.error}
            close = Decimal(str(rows[at][4]))
            if not _same(_acted(signals[i], close), _acted(result.value, close)):
                found.append(
                    {
                        "time_ms": int(rows[at][0]),
                        "generate_signals": _acted(signals[i], close),
                        "generate_signal": _acted(result.value, close),
                    }
                )
    return {"checked": len(sample), "disagreements": found}


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
