"""Position sizing from a subscriber's own capital, risk and leverage. Decimal throughout."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from core.decimals import decimal_fit, decimal_limit
from subscriptions.models import MONEY
from trades.models import QUANTITY

QUANTITY_STEP = Decimal("0.00000001")


class PositionUnfit(ValueError):
    """A position whose size, notional or PnL its columns cannot hold: the order is skipped."""


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
    if quantity >= decimal_limit(QUANTITY):  # checked before rounding, which would overflow
        raise PositionUnfit(
            f"position size {quantity:.6e} does not fit the quantity column "
            f"(below {decimal_limit(QUANTITY):.0e})"
        )
    return quantity.quantize(QUANTITY_STEP, rounding=ROUND_DOWN)


def position_check(
    *,
    side: str,
    quantity: Decimal,
    price: Decimal,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
) -> None:
    """Refuse (``PositionUnfit``) a position whose numbers could not be recorded.

    Its notional, its fees (a fraction of it) and its PnL at the stop and at the target are
    money columns; a value beyond them would fail the write on PostgreSQL and every later read
    on SQLite.
    """
    limit = decimal_limit(MONEY)
    if decimal_fit(quantity * price, MONEY) is None:
        raise PositionUnfit(
            f"notional {quantity * price:.6e} does not fit a money column (below {limit:.0e})"
        )
    for name, level in (("stop loss", stop_loss), ("take profit", take_profit)):
        if level is None:
            continue
        pnl = realized_pnl(
            side=side, quantity=quantity, entry_price=price, exit_price=level, fees=Decimal(0)
        )
        if decimal_fit(pnl, MONEY) is None:
            raise PositionUnfit(
                f"the PnL at the {name} ({pnl:.6e}) does not fit a money column (below {limit:.0e})"
            )


def realized_pnl(
    *, side: str, quantity: Decimal, entry_price: Decimal, exit_price: Decimal, fees: Decimal
) -> Decimal:
    gross = (exit_price - entry_price) * quantity
    if side == "short":
        gross = -gross
    return gross - fees
