"""Paper broker: fills at the market price (the signal candle's close), with fee and slippage."""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from markets.symbols import symbol_quote
from trades.brokers.base import OrderRequest, OrderResult, OrderStatus

BPS = Decimal("10000")
PRICE_STEP = Decimal("0.000000000001")


class PaperBroker:
    def __init__(self, *, fee_bps: Decimal, slippage_bps: Decimal) -> None:
        self.fee_rate = fee_bps / BPS
        self.slippage_rate = slippage_bps / BPS

    def fill_price(self, order: OrderRequest) -> Decimal:
        # Every paper order fills at the market price it was given (the close, or the open or
        # level a stop reached), a limit too: the limit is the strategy's price, and a paper
        # fill there would book a price the market may never have traded.
        # Slippage always works against the trader: buys fill higher, sells lower.
        direction = 1 if order.side == "buy" else -1
        price = order.reference_price * (1 + direction * self.slippage_rate)
        return price.quantize(PRICE_STEP)

    def place_market_order(self, order: OrderRequest) -> OrderResult:
        if order.quantity <= 0:
            return OrderResult(status=OrderStatus.REJECTED, reason="quantity must be positive")
        price = self.fill_price(order)
        fee = (price * order.quantity * self.fee_rate).quantize(Decimal("0.00000001"))
        return OrderResult(
            status=OrderStatus.FILLED,
            quantity=order.quantity,
            amount=order.quantity,
            average_price=price,
            fee=fee,
            fee_currency=symbol_quote(order.symbol),  # fees are taken in the quote, as spot's
            # Deterministic, like an exchange answering a repeated client order id.
            exchange_order_id=f"paper-{order.client_order_id}",
            filled_at=order.reference_time,
            acknowledged_at=timezone.now(),
        )
