"""What an order is for: one typed value, stored as its string, with the client order id it gives.

An order intent is unique per (execution, subscription, purpose). The purposes are an entry, the
exit of a trade, the stop loss and take profit resting on the exchange for a trade, and the
close of a trade asked outside the strategy (by hand, or by a protection: ``trades.closes``).
Code builds them with the constructors below and reads ``kind`` and ``trade_id``; nothing
parses strings. The stored forms (``entry``, ``exit:<trade>``, ``stop:<trade>``,
``take:<trade>``, ``close:<trade>``, ``resync:<divergence>``) and the client order ids
(``sf-<execution>-<subscription>-<code>``) are what orders already on the exchanges carry, so
both keep their format.

A close has no execution of its own: its intent belongs to the trade's entry execution, so
(execution, subscription, ``close:<trade>``) is unique per trade and the constraint that
fences every other order fences it too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.db import models
from django.db.models import Q


class PurposeKind(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    STOP = "stop"
    TAKE = "take"
    CLOSE = "close"
    # A resync of a divergence by an order (trades.resync): its number is the divergence's.
    RESYNC = "resync"


PROTECTIVE = (PurposeKind.STOP, PurposeKind.TAKE)
# The letter each kind has in client order ids (orders on the exchanges carry these).
ID_CODES = {
    PurposeKind.ENTRY: "e",
    PurposeKind.EXIT: "x",
    PurposeKind.STOP: "s",
    PurposeKind.TAKE: "t",
    PurposeKind.CLOSE: "c",
    PurposeKind.RESYNC: "r",
}
# The kinds that close a trade at market: the strategy's exit, and a close outside it.
EXITS = (PurposeKind.EXIT, PurposeKind.CLOSE)
EXIT_REASONS = {PurposeKind.STOP: "stop loss", PurposeKind.TAKE: "take profit"}


class OrderPurpose(str):
    """A purpose; equal to (and stored as) its string form, e.g. ``"stop:12"``."""

    kind: PurposeKind
    trade_id: int | None

    def __new__(cls, kind: PurposeKind, trade_id: int | None = None) -> OrderPurpose:
        if (kind == PurposeKind.ENTRY) != (trade_id is None):
            raise ValueError(f"an {kind} purpose {'takes no' if trade_id else 'needs a'} trade")
        value = super().__new__(cls, kind if trade_id is None else f"{kind}:{trade_id}")
        value.kind, value.trade_id = kind, trade_id
        return value

    def __getnewargs__(self) -> tuple[PurposeKind, int | None]:  # type: ignore[override]
        return (self.kind, self.trade_id)

    @classmethod
    def entry(cls) -> OrderPurpose:
        return cls(PurposeKind.ENTRY)

    @classmethod
    def exit(cls, trade_id: int) -> OrderPurpose:
        return cls(PurposeKind.EXIT, trade_id)

    @classmethod
    def close(cls, trade_id: int) -> OrderPurpose:
        return cls(PurposeKind.CLOSE, trade_id)

    @classmethod
    def resync(cls, divergence_id: int) -> OrderPurpose:
        """Deterministic per divergence: asking twice sends one order."""
        return cls(PurposeKind.RESYNC, divergence_id)

    @classmethod
    def protective(cls, kind: PurposeKind, trade_id: int) -> OrderPurpose:
        if kind not in PROTECTIVE:
            raise ValueError(f"{kind} is not a protective purpose")
        return cls(kind, trade_id)

    @classmethod
    def parse(cls, stored: str) -> OrderPurpose:
        """The one place a stored purpose is read back (the model field calls it)."""
        if isinstance(stored, OrderPurpose):
            return stored
        kind, _, trade = stored.partition(":")
        try:
            return cls(PurposeKind(kind), int(trade) if trade else None)
        except ValueError as exc:
            raise ValueError(f"not an order purpose: {stored!r}") from exc

    @property
    def is_protective(self) -> bool:
        return self.kind in PROTECTIVE

    @property
    def is_exit(self) -> bool:
        """Closes its trade at market (an exit or a close), once its trade's claim is held."""
        return self.kind in EXITS

    @property
    def exit_reason(self) -> str:
        """Why a fill of this order closes its trade (protective orders only)."""
        return EXIT_REASONS[self.kind]

    def client_order_id(self, *, execution_id: int, subscription_id: int) -> str:
        """Deterministic, so a resent order is recognised by the exchange as the same order."""
        trade = "" if self.trade_id is None else str(self.trade_id)
        return f"sf-{execution_id}-{subscription_id}-{ID_CODES[self.kind]}{trade}"


def purpose_kind_q(kind: PurposeKind, field: str = "purpose") -> Q:
    """Orders of one kind, whatever their trade."""
    if kind == PurposeKind.ENTRY:
        return Q(**{field: kind.value})
    return Q(**{f"{field}__startswith": f"{kind}:"})


def protective_q() -> Q:
    return purpose_kind_q(PurposeKind.STOP) | purpose_kind_q(PurposeKind.TAKE)


class OrderPurposeField(models.CharField):
    """A CharField whose values are :class:`OrderPurpose` in Python."""

    # What the type checker's Django plugin reads as the field's set and get types.
    _pyi_private_set_type: OrderPurpose | str
    _pyi_private_get_type: OrderPurpose

    def from_db_value(self, value: str | None, *args: Any) -> OrderPurpose | None:
        return None if value is None else OrderPurpose.parse(value)

    def to_python(self, value: Any) -> OrderPurpose | None:
        return None if value is None else OrderPurpose.parse(str(value))

    def get_prep_value(self, value: Any) -> Any:
        # Plain strings pass as they are: lookups such as ``purpose__startswith="stop:"``.
        return None if value is None else str(value)
