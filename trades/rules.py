"""The trading rules paper trading and backtests share: one implementation, two callers.

What a signal does to a position (reverse, skip, close), how large an entry is, and the
reasons recorded for each. The fan-out applies them to subscriptions in the database; a
backtest applies them to an account in memory. Fills come from the paper broker and stops
from ``trades.protect.protective_fill``, the same for both.
"""

from __future__ import annotations

from decimal import Decimal

from strategies.signals import Signal, SignalType
from trades.brokers.base import OrderSide
from trades.sizing import PositionUnfit, position_check, position_quantity

LONG, SHORT = "long", "short"
ENTRY_SIDE = {SignalType.LONG: LONG, SignalType.SHORT: SHORT}
EXIT_SIDE = {SignalType.EXIT_LONG: LONG, SignalType.EXIT_SHORT: SHORT}
OPPOSITE = {LONG: SHORT, SHORT: LONG}

REVERSED = "reversed by an opposite signal"
EXIT_SIGNAL = "exit signal"
ROUNDS_TO_ZERO = "position size rounds to zero"


def holding_reason(side: str) -> str:
    """Why an entry is skipped: one position per side at a time."""
    return f"a {side} position is already open"


def entry_side(side: str) -> OrderSide:
    """The order side that opens a position of this side."""
    return "buy" if side == LONG else "sell"


def exit_side(side: str) -> OrderSide:
    """The order side that closes a position of this side."""
    return "sell" if side == LONG else "buy"


def entry_quantity(
    *,
    capital: Decimal,
    risk_per_trade: Decimal,
    leverage: Decimal,
    price: Decimal,
    signal: Signal,
) -> Decimal:
    """The entry's size at ``price`` (the close), or ``PositionUnfit`` with the reason.

    A size that rounds to zero, or whose notional or PnL at the stop or target could not be
    recorded, is refused here: the entry is skipped with the reason, never sent.
    """
    quantity = position_quantity(
        capital=capital,
        risk_per_trade=risk_per_trade,
        leverage=leverage,
        price=price,
        stop_loss=signal.stop_loss,
    )
    if quantity <= 0:
        raise PositionUnfit(ROUNDS_TO_ZERO)
    position_check(
        side=ENTRY_SIDE[signal.type],
        quantity=quantity,
        price=price,
        stop_loss=signal.stop_loss,
        take_profit=signal.take_profit,
    )
    return quantity
