"""The interface every broker implements (paper now; ccxt for live trading)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

OrderSide = Literal["buy", "sell"]


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: OrderSide
    quantity: Decimal
    client_order_id: str
    reference_price: Decimal
    reference_time: datetime
    reduce_only: bool = False


@dataclass(frozen=True)
class OrderResult:
    filled: bool
    quantity: Decimal = Decimal("0")
    average_price: Decimal | None = None
    fee: Decimal = Decimal("0")
    exchange_order_id: str = ""
    filled_at: datetime | None = None
    reason: str = ""


class Broker(Protocol):
    def place_market_order(self, order: OrderRequest) -> OrderResult: ...


class BrokerUnavailable(RuntimeError):
    """No broker can serve this subscription (e.g. live trading not configured)."""
