"""Turns what a strategy returned into a validated Signal, or explains why it cannot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any


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
    return None if value is None else str(value)


def _as_decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _price(raw: dict[str, Any], name: str, *, required: bool) -> Decimal | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidSignal(f"'{name}' is required for this signal")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidSignal(f"'{name}' must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError as exc:
        raise InvalidSignal(f"'{name}' must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise InvalidSignal(f"'{name}' must be a finite positive number, got {value!r}")
    return Decimal(str(value))


def _check_sides(
    kind: SignalType, price: Decimal, stop: Decimal | None, tp: Decimal | None
) -> None:
    # A stop on the winning side (or a target on the losing side) would close at once.
    losing_below = kind == SignalType.LONG
    if stop is not None and (stop >= price if losing_below else stop <= price):
        side = "below" if losing_below else "above"
        raise InvalidSignal(f"stopLoss {stop} must be {side} price {price} for {kind}")
    if tp is not None and (tp <= price if losing_below else tp >= price):
        side = "above" if losing_below else "below"
        raise InvalidSignal(f"takeProfit {tp} must be {side} price {price} for {kind}")


def signal_parse(raw: Any, *, fallback_price: Decimal) -> Signal:
    """Validate a strategy's return value. ``None`` means HOLD."""
    if raw is None:
        return Signal(type=SignalType.HOLD)
    if not isinstance(raw, dict):
        raise InvalidSignal(f"generate_signal must return a dict or None, got {type(raw).__name__}")
    try:
        kind = SignalType(str(raw.get("signal", "")).upper())
    except ValueError as exc:
        allowed = ", ".join(SignalType)
        raise InvalidSignal(
            f"unknown signal {raw.get('signal')!r}; expected one of {allowed}"
        ) from exc
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidSignal("'metadata' must be an object")
    if kind == SignalType.HOLD:
        return Signal(type=kind, metadata=metadata)
    price = _price(raw, "price", required=False) or fallback_price
    stop = _price(raw, "stopLoss", required=False) if kind.is_entry else None
    tp = _price(raw, "takeProfit", required=False) if kind.is_entry else None
    if kind.is_entry:
        _check_sides(kind, price, stop, tp)
    return Signal(type=kind, price=price, stop_loss=stop, take_profit=tp, metadata=metadata)
