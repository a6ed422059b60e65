"""Per-user limit on requested backtests."""

from __future__ import annotations

from strategies.throttles import StrategyChangeThrottle

BACKTESTS = "backtests"


class BacktestThrottle(StrategyChangeThrottle):
    """Backtests requested per user (``throttle_scope`` of the view), counted in Redis across
    web processes: each one holds the backtest worker for up to ``BACKTEST_BUDGET_S``."""
