"""Turns what a strategy returned into a validated Signal, or explains why it cannot."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from django.conf import settings

from core.decimals import decimal_fit, decimal_limit, decimal_step
from core.types import PRICE


class SignalType(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"
    HOLD = "HOLD"
    EXIT_LONG = "EXIT_LONG"
    EXIT_SHORT = "EXIT_SHORT"

    @property
    def is_entry(self) -> bool:
        return self in (SignalType.LONG, SignalType.SHORT)

    @property
    def is_exit(self) -> bool:
        return self in (SignalType.EXIT_LONG, SignalType.EXIT_SHORT)


class InvalidSignal(ValueError):
    """The strategy returned something that is not a valid signal."""


@dataclass(frozen=True)
class Signal:
    type: SignalType
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": str(self.type),
            "price": _as_str(self.price),
            "stopLoss": _as_str(self.stop_loss),
            "takeProfit": _as_str(self.take_profit),
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signal:
        return cls(
            type=SignalType(data["signal"]),
            price=_as_decimal(data.get("price")),
            stop_loss=_as_decimal(data.get("stopLoss")),
            take_profit=_as_decimal(data.get("takeProfit")),
            metadata=data.get("metadata") or {},
        )


def _as_str(value: Decimal | None) -> str | None:
    # Plain notation: a normalized 150 is Decimal("1.5E+2"), recorded as "150".
    return None if value is None else f"{value:f}"


def _as_decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _show(value: Any) -> str:
    """A strategy's number for an error message: short, whatever its size."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"{Decimal(value):.6e}"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _price(raw: dict[str, Any], name: str) -> Decimal | None:
    """A price of the signal as a price column stores it, or why it cannot be one."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidSignal(f"'{name}' must be a number, got {type(value).__name__}")
    try:
        # An int is converted exactly (float() overflows past 1e308); a float by its repr.
        number = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidSignal(f"'{name}' must be a number, got {_show(value)}") from exc
    if not number.is_finite() or number <= 0:
        raise InvalidSignal(f"'{name}' must be a finite positive number, got {_show(value)}")
    stored = decimal_fit(number, PRICE)
    if stored is None:
        raise InvalidSignal(
            f"'{name}' {_show(value)} is too large for a price (below {decimal_limit(PRICE):.0e})"
        )
    if stored == 0:
        raise InvalidSignal(
            f"'{name}' {_show(value)} is too small for a price (at least {decimal_step(PRICE)})"
        )
    # Trailing zeros dropped (exactly, at the column's precision): 150, not 150.000000000000.
    return stored.normalize(Context(prec=PRICE["max_digits"]))


def signal_check_levels(
    *, kind: SignalType, market_price: Decimal, stop: Decimal | None, tp: Decimal | None
) -> None:
    """An entry's stop and target must lie on either side of the market price.

    Checked against the market (the close the signal was made at), never against the price
    the strategy claims: a stop on the winning side of the market would "fill" at once at a
    price the market never traded.
    """
    losing_below = kind == SignalType.LONG
    if stop is not None and (stop >= market_price if losing_below else stop <= market_price):
        side = "below" if losing_below else "above"
        raise InvalidSignal(
            f"stopLoss {stop:f} must be {side} the market price {market_price:f} for {kind}"
        )
    if tp is not None and (tp <= market_price if losing_below else tp >= market_price):
        side = "above" if losing_below else "below"
        raise InvalidSignal(
            f"takeProfit {tp:f} must be {side} the market price {market_price:f} for {kind}"
        )


def _check_band(price: Decimal, market_price: Decimal) -> None:
    """An entry's price (a live limit entry rests there) must be one the market offers."""
    band = Decimal(settings.ENTRY_PRICE_BAND)
    distance = abs(price - market_price) / market_price
    if distance > band:
        raise InvalidSignal(
            f"price {price:f} is {distance:.2%} from the close {market_price:f} (band {band:.2%})"
        )


def signal_parse(raw: Any, *, market_price: Decimal) -> Signal:
    """Validate a strategy's return value against the market price (the close); None is HOLD.

    Every number is checked against what the price columns can store, here, once. The
    strategy's ``price`` is never a fill: entries fill at the market, and an entry's price
    more than ENTRY_PRICE_BAND from the close makes the signal invalid; an exit's is recorded
    and not used (exits go out at market).
    """
    if raw is None:
        return Signal(type=SignalType.HOLD)
    if not isinstance(raw, dict):
        raise InvalidSignal(f"generate_signal must return a dict or None, got {type(raw).__name__}")
    try:
        kind = SignalType(str(raw.get("signal", "")).upper())
    except ValueError as exc:
        allowed = ", ".join(SignalType)
        raise InvalidSignal(
            f"unknown signal {_show(raw.get('signal'))}; expected one of {allowed}"
        ) from exc
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidSignal("'metadata' must be an object")
    if kind == SignalType.HOLD:
        return Signal(type=kind, metadata=metadata)
    price = _price(raw, "price") or market_price
    stop = _price(raw, "stopLoss") if kind.is_entry else None
    tp = _price(raw, "takeProfit") if kind.is_entry else None
    if kind.is_entry:
        signal_check_levels(kind=kind, market_price=market_price, stop=stop, tp=tp)
        _check_band(price, market_price)
    return Signal(type=kind, price=price, stop_loss=stop, take_profit=tp, metadata=metadata)
