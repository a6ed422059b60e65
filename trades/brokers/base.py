"""What every broker takes and gives back (paper in process, live through ccxt)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

OrderSide = Literal["buy", "sell"]


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: OrderSide
    quantity: Decimal
    client_order_id: str
    # The market price (the signal's close, or where a stop was reached), never the strategy's
    # own price: paper fills here, minimum costs use it.
    reference_price: Decimal
    reference_time: datetime
    reduce_only: bool = False
    type: str = "market"  # market | limit
    price: Decimal | None = None  # the limit price
    leverage: Decimal = Decimal("1")
    margin_mode: str = ""
    # Set for the bump_to_minimum policy: the largest notional the subscriber can carry.
    bump_max_notional: Decimal | None = None
    # An earlier attempt may have reached the exchange: look it up before sending again.
    lookup_first: bool = False


class OrderStatus(StrEnum):
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    OPEN = "open"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"  # the exchange (or a check before sending) refused it
    SKIPPED = "skipped"  # never sent, e.g. below the market's minimum
    UNKNOWN = "unknown"  # sent, but whether the exchange has it is not known yet
    NOT_FOUND = "not_found"  # a lookup only: the exchange has no such order


class CredentialFailure(StrEnum):
    """Why a request failed on its credential's account; recorded on the credential."""

    AUTH = "auth"  # the exchange refused the keys (revoked, wrong, no permission): pause
    DECRYPT = "decrypt"  # the keys cannot be decrypted (or were deleted): pause
    TRANSIENT = "transient"  # network, exchange down, an unexpected error: retried later

    @property
    def pauses(self) -> bool:
        """The credential cannot work until its owner fixes it: its subscriptions pause."""
        return self in (CredentialFailure.AUTH, CredentialFailure.DECRYPT)


@dataclass(frozen=True)
class OrderResult:
    status: OrderStatus
    quantity: Decimal = Decimal("0")  # filled quantity
    amount: Decimal | None = None  # what was (or would have been) sent, after precision
    average_price: Decimal | None = None
    fee: Decimal = Decimal("0")  # in the quote currency
    fee_currency: str = ""
    exchange_order_id: str = ""
    filled_at: datetime | None = None
    acknowledged_at: datetime | None = None
    reason: str = ""
    # Set when the failure is the credential's (trades.orders records it on the credential).
    credential_failure: CredentialFailure | None = None

    @property
    def filled(self) -> bool:
        return self.status == OrderStatus.FILLED

    @property
    def has_fill(self) -> bool:
        return self.quantity > 0 and self.average_price is not None
