"""Market symbols, ccxt's unified form: ``BASE/QUOTE`` for spot, ``BASE/QUOTE:SETTLE`` for swaps."""

from __future__ import annotations


def symbol_quote(symbol: str) -> str:
    """The currency prices, fees and PnL are counted in: ``ETH/BTC`` → ``BTC``,
    ``XRP/USDT:USDT`` → ``USDT``."""
    return symbol.split("/")[-1].split(":")[0]
