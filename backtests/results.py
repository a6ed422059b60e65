"""What a backtest produces, as plain values: the engine writes them, metrics and charts read them.

No database here: the same values come from a run in memory or from a stored ``Backtest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass
class SimTrade:
    """One position of the backtest's account, opened and (unless still open) closed."""

    side: str  # "long" | "short"
    quantity: Decimal
    entry_time: datetime  # the close of the signal candle
    entry_price: Decimal  # a fill: the close, with slippage against the trader
    entry_fee: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    exit_time: datetime | None = None
    exit_price: Decimal | None = None
    exit_fee: Decimal = Decimal("0")
    pnl: Decimal | None = None  # net of both fees, once closed
    exit_reason: str = ""  # exit signal | reversed by an opposite signal | stop loss | ...
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.exit_time is None


@dataclass(frozen=True)
class Skip:
    """A signal the account did not act on, and why (as paper trading records it)."""

    time: datetime
    signal: str
    reason: str


@dataclass
class BacktestSeries:
    """Everything a backtest's figures and pictures are computed from."""

    resolution: str
    capital: Decimal  # in the market's quote currency
    quote: str  # the quote currency, e.g. "BTC"
    times: list[datetime] = field(default_factory=list)  # each traded candle's close
    closes: list[Decimal] = field(default_factory=list)  # each traded candle's close price
    equity: list[Decimal] = field(default_factory=list)  # capital + realized + unrealized
    trades: list[SimTrade] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
