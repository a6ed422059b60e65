"""Position sizing from a subscriber's own capital, risk and leverage. Decimal throughout."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

QUANTITY_STEP = Decimal("0.00000001")


def position_quantity(
    *,
    capital: Decimal,
    risk_per_trade: Decimal,
    leverage: Decimal,
    price: Decimal,
    stop_loss: Decimal | None,
) -> Decimal:
    """Quantity to trade, rounded down so the risk taken never exceeds the risk allowed.

    With a stop loss, losing ``capital * risk_per_trade`` at the stop sets the size, capped so the
    notional stays within ``capital * leverage``; without one, the notional is
    ``capital * risk_per_trade * leverage``.
    """
    if price <= 0:
        raise ValueError("price must be positive")
    max_notional = capital * leverage
    if stop_loss is not None and stop_loss != price:
        quantity = capital * risk_per_trade / abs(price - stop_loss)
        quantity = min(quantity, max_notional / price)
    else:
        quantity = capital * risk_per_trade * leverage / price
    return quantity.quantize(QUANTITY_STEP, rounding=ROUND_DOWN)


def realized_pnl(
    *, side: str, quantity: Decimal, entry_price: Decimal, exit_price: Decimal, fees: Decimal
) -> Decimal:
    gross = (exit_price - entry_price) * quantity
    if side == "short":
        gross = -gross
    return gross - fees
