"""The backtest's account: one paper subscriber following one strategy over history.

Every rule comes from where paper trading takes it: signals are validated by
``signal_parse`` against the close, entries sized by ``trades.rules.entry_quantity`` and
filled by the paper broker at the close (fee and slippage), stops and targets checked on each
closed candle by ``protective_fill``, positions reversed, skipped and closed by the same rules
and reasons. The order at each close is the candle-close pipeline's: stops first, then the
strategy's signal, then the account is valued at the close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from backtests.results import BacktestSeries, SimTrade, Skip
from core.time_utils import ms_to_datetime
from strategies.signals import InvalidSignal, Signal, signal_parse
from trades.brokers import OrderRequest, PaperBroker
from trades.protect import protective_fill
from trades.rules import (
    ENTRY_SIDE,
    EXIT_SIDE,
    EXIT_SIGNAL,
    OPPOSITE,
    REVERSED,
    entry_quantity,
    entry_side,
    exit_side,
    holding_reason,
)
from trades.sizing import PositionUnfit, realized_pnl

ZERO = Decimal("0")
MONEY_STEP = Decimal("0.00000001")


@dataclass(frozen=True)
class Sizing:
    capital: Decimal
    risk_per_trade: Decimal
    leverage: Decimal


class Bar:
    """A closed candle as the pipeline reads it: floats from the store, prices as Decimals.

    The close is read at every candle; open, high and low only where a stop or target rests,
    so they are converted when asked (most closes of a backtest hold no position)."""

    __slots__ = ("close", "close_time", "row")

    def __init__(self, row: list[float], close_time: datetime) -> None:
        self.row = row  # the stored floats: open, high and low are read from them when asked
        self.close_time = close_time
        self.close = _price(row[4])

    @classmethod
    def from_row(cls, row: list[float], *, step_ms: int) -> Bar:
        return cls(row, ms_to_datetime(int(row[0]) + step_ms))

    @property
    def open(self) -> Decimal:
        return _price(self.row[1])

    @property
    def high(self) -> Decimal:
        return _price(self.row[2])

    @property
    def low(self) -> Decimal:
        return _price(self.row[3])


def _price(value: float) -> Decimal:
    # Decimal(str(float)), exactly as the pipeline turns a stored candle into prices.
    return Decimal(str(value))


class Account:
    """One position at a time, sized from a fixed capital, as a paper subscription is."""

    def __init__(self, *, sizing: Sizing, broker: PaperBroker, series: BacktestSeries) -> None:
        self.sizing, self.broker, self.series = sizing, broker, series
        self.position: SimTrade | None = None
        self.realized = ZERO
        # capital + realized, the equity while flat (most closes): summed once per trade.
        self._settled = sizing.capital + ZERO
        # The position's stop and target as floats, widened by LEVEL_MARGIN: a candle
        # whose range stays strictly inside them cannot reach either (see check_stops).
        self._inside: tuple[float, float] | None = None

    def resume(self, *, position: SimTrade | None, realized: Decimal) -> None:
        """Carry on from a stored state: this position open, this PnL realized."""
        self.position, self.realized = position, realized
        self._settled = self.sizing.capital + realized
        self._inside = (
            None
            if position is None
            else _inside_levels(position.side, position.stop_loss, position.take_profit)
        )

    # --- at each close, in the pipeline's order ---------------------------------------------
    def check_stops(self, bar: Bar) -> None:
        """A stop or target the closed candle reached closes the position where it filled."""
        trade = self.position
        if trade is None or (trade.stop_loss is None and trade.take_profit is None):
            return
        if self._inside is not None and _strictly_inside(bar.row, self._inside):
            return  # the exact check below would find nothing: spare its Decimals
        hit = protective_fill(
            side=trade.side,
            stop_loss=trade.stop_loss,
            take_profit=trade.take_profit,
            open_price=bar.open,
            high=bar.high,
            low=bar.low,
        )
        if hit is not None:
            self._close(hit.price, bar.close_time, hit.reason)

    def apply(self, raw: Any, bar: Bar) -> None:
        """The strategy's return value at this close: validated, then acted on."""
        if raw is None:  # HOLD, as signal_parse reads None: most closes, nothing to act on
            return
        try:
            signal = signal_parse(raw, market_price=bar.close)
        except InvalidSignal as exc:  # live: a failed execution, nothing traded
            kind = raw.get("signal") if isinstance(raw, dict) else None
            self._skip(bar, str(kind)[:20], f"invalid signal: {exc}")
            return
        if signal.type.is_entry:
            self._enter(signal, bar)
        elif signal.type.is_exit and self._holds(EXIT_SIDE[signal.type]):
            self._close(bar.close, bar.close_time, EXIT_SIGNAL)

    def mark(self, bar: Bar) -> None:
        """Equity at the close: capital, realized PnL, and the open position valued there."""
        self.series.times.append(bar.close_time)
        self.series.closes.append(bar.close)
        # (capital + realized) + unrealized: the same sum, in the same order, as ever.
        equity = self._settled if self.position is None else self._settled + self._unrealized(bar)
        self.series.equity.append(equity)

    # --- the rules ------------------------------------------------------------------------
    def _holds(self, side: str) -> bool:
        return self.position is not None and self.position.side == side

    def _enter(self, signal: Signal, bar: Bar) -> None:
        side = ENTRY_SIDE[signal.type]
        if self._holds(OPPOSITE[side]):
            self._close(bar.close, bar.close_time, REVERSED)
        if self.position is not None:
            self._skip(bar, str(signal.type), holding_reason(side))
            return
        try:
            quantity = entry_quantity(
                capital=self.sizing.capital,
                risk_per_trade=self.sizing.risk_per_trade,
                leverage=self.sizing.leverage,
                price=bar.close,
                signal=signal,
            )
        except PositionUnfit as exc:
            self._skip(bar, str(signal.type), str(exc))
            return
        fill = self.broker.place_market_order(
            _request(entry_side(side), quantity, bar.close, bar.close_time)
        )
        assert fill.average_price is not None
        self.position = SimTrade(
            side=side,
            quantity=quantity,
            entry_time=bar.close_time,
            entry_price=fill.average_price,
            entry_fee=fill.fee,
            stop_loss=signal.stop_loss,
            take_profit=signal.take_profit,
            metadata=signal.metadata,
        )
        self.series.trades.append(self.position)
        self._inside = _inside_levels(side, signal.stop_loss, signal.take_profit)

    def _close(self, price: Decimal, time: datetime, reason: str) -> None:
        trade = self.position
        assert trade is not None
        fill = self.broker.place_market_order(
            _request(exit_side(trade.side), trade.quantity, price, time)
        )
        assert fill.average_price is not None
        trade.exit_time, trade.exit_price, trade.exit_fee = time, fill.average_price, fill.fee
        trade.exit_reason = reason
        trade.pnl = realized_pnl(
            side=trade.side,
            quantity=trade.quantity,
            entry_price=trade.entry_price,
            exit_price=fill.average_price,
            fees=trade.entry_fee + fill.fee,
        ).quantize(MONEY_STEP)
        self.realized += trade.pnl
        self._settled = self.sizing.capital + self.realized
        self.position, self._inside = None, None

    def _unrealized(self, bar: Bar) -> Decimal:
        trade = self.position
        if trade is None:
            return ZERO
        # As a position is valued: at the close, net of the entry fee already paid.
        return realized_pnl(
            side=trade.side,
            quantity=trade.quantity,
            entry_price=trade.entry_price,
            exit_price=bar.close,
            fees=trade.entry_fee,
        ).quantize(MONEY_STEP)

    def _skip(self, bar: Bar, signal: str, reason: str) -> None:
        self.series.skips.append(Skip(time=bar.close_time, signal=signal, reason=reason))


# Far above the error of a float next to the Decimal it was read from or converts to (about
# 1e-16 relative), far below any real distance between a price and a level.
LEVEL_MARGIN = 1e-9
INF = float("inf")


def _inside_levels(
    side: str, stop_loss: Decimal | None, take_profit: Decimal | None
) -> tuple[float, float] | None:
    """(lowest, highest) float prices a candle may trade, open included, without reaching
    the stop or the target: each level moved LEVEL_MARGIN towards the entry."""
    below, above = (stop_loss, take_profit) if side == "long" else (take_profit, stop_loss)
    low = -INF if below is None else float(below) + abs(float(below)) * LEVEL_MARGIN
    high = INF if above is None else float(above) - abs(float(above)) * LEVEL_MARGIN
    return (low, high) if low < high else None


def _strictly_inside(row: list[float], inside: tuple[float, float]) -> bool:
    """The candle's open, high and low all strictly between the widened levels."""
    low, high = inside
    return low < min(row[1], row[3]) and max(row[1], row[2]) < high


def _request(side: Any, quantity: Decimal, price: Decimal, time: datetime) -> OrderRequest:
    return OrderRequest(
        symbol="",
        side=side,
        quantity=quantity,
        client_order_id="backtest",
        reference_price=price,
        reference_time=time,
    )
