"""The divergence report: how far each of a follower's fills was from the signal it followed.

For each fill that followed a signal (an entry, or an exit by the strategy's exit signal):

* ``signal_price``: the strategy's own price on the signal, else the close it fired on;
* ``fill_price``: the exchange's (or the paper broker's) average fill price;
* ``slippage_bps``: signed *against the follower*, so above zero always costs them: a buy
  filled above the signal's price, or a sell filled below it,
  ``(fill - signal) / signal x 10 000`` for a buy and ``(signal - fill) / signal x 10 000``
  for a sell;
* ``latency_ms``: from the signal (its execution finished, the fan-out's start) to the fill.

And the signals the follower did not get: its entries skipped, rejected, failed or cancelled,
each with its reason. A strategy's figures average its followers' averages (each follower
counts once, however many fills it had).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from statistics import mean, median
from typing import Any

from strategies.models import Strategy, StrategyExecution
from subscriptions.models import StrategySubscription
from trades.models import Trade

BPS = Decimal(10_000)
BPS_STEP = Decimal("0.01")
NOT_FILLED = (
    Trade.Status.SKIPPED,
    Trade.Status.REJECTED,
    Trade.Status.FAILED,
    Trade.Status.CANCELLED,
)


@dataclass(frozen=True)
class FillRow:
    trade_id: int
    subscription_id: int
    leg: str  # entry | exit
    side: str  # buy | sell
    execution_id: int
    signal_price: Decimal
    fill_price: Decimal
    slippage_bps: Decimal
    signal_at: datetime
    filled_at: datetime
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def signal_price(execution: StrategyExecution) -> Decimal | None:
    price = (execution.signal or {}).get("price")
    return Decimal(price) if price else execution.close_price


def slippage_bps(*, side: str, signal: Decimal, fill: Decimal) -> Decimal:
    """Signed against the follower: above zero, the fill cost them against the signal."""
    moved = (fill - signal) if side == "buy" else (signal - fill)
    return (moved / signal * BPS).quantize(BPS_STEP)


def _row(trade: Trade, *, leg: str) -> FillRow | None:
    execution = trade.execution if leg == "entry" else trade.exit_execution
    fill = trade.entry_price if leg == "entry" else trade.exit_price
    filled_at = trade.entry_time if leg == "entry" else trade.exit_time
    if execution is None or fill is None or filled_at is None:
        return None
    reference = signal_price(execution)
    signal_at = execution.finished_at or execution.interval_end
    if not reference:
        return None
    buys = (trade.side == Trade.Side.LONG) == (leg == "entry")
    side = "buy" if buys else "sell"
    return FillRow(
        trade_id=trade.pk,
        subscription_id=trade.subscription_id,
        leg=leg,
        side=side,
        execution_id=execution.pk,
        signal_price=reference,
        fill_price=fill,
        slippage_bps=slippage_bps(side=side, signal=reference, fill=fill),
        signal_at=signal_at,
        filled_at=filled_at,
        latency_ms=(filled_at - signal_at).total_seconds() * 1000,
    )


def fill_rows(trades: list[Trade]) -> list[FillRow]:
    rows = []
    for trade in trades:
        for leg in ("entry", "exit"):
            row = _row(trade, leg=leg)
            if row is not None:
                rows.append(row)
    return sorted(rows, key=lambda r: (r.filled_at, r.trade_id))


def _average_bps(values: list[Decimal]) -> Decimal | None:
    return (sum(values, Decimal(0)) / len(values)).quantize(BPS_STEP) if values else None


def summary(rows: list[FillRow], *, skipped: int) -> dict[str, Any]:
    slips = [r.slippage_bps for r in rows]
    latencies = [r.latency_ms for r in rows]
    return {
        "fills": len(rows),
        "slippage_bps_avg": _average_bps(slips),
        "slippage_bps_max": max(slips) if slips else None,
        "latency_ms_avg": mean(latencies) if latencies else None,
        "latency_ms_p50": median(latencies) if latencies else None,
        "latency_ms_max": max(latencies) if latencies else None,
        "signals_missed": skipped,
    }


def _trades(**filters: Any) -> list[Trade]:
    return list(
        Trade.objects.filter(**filters).select_related("execution", "exit_execution").order_by("pk")
    )


def subscription_divergence_report(*, subscription: StrategySubscription) -> dict[str, Any]:
    trades = _trades(subscription=subscription)
    rows = fill_rows([t for t in trades if t.status not in NOT_FILLED])
    missed = [
        {
            "trade_id": t.pk,
            "execution_id": t.execution_id,
            "signal_at": t.execution.finished_at or t.execution.interval_end,
            "status": t.status,
            "reason": t.error,
        }
        for t in trades
        if t.status in NOT_FILLED
    ]
    return {
        "subscription_id": subscription.pk,
        "summary": summary(rows, skipped=len(missed)),
        "fills": [r.as_dict() for r in rows],
        "missed_signals": missed,
    }


def strategy_followers_divergence(*, strategy: Strategy) -> dict[str, Any]:
    """Each follower's averages, averaged over the followers with at least one fill."""
    trades = _trades(subscription__strategy=strategy)
    by_sub: dict[int, list[Trade]] = {}
    for trade in trades:
        by_sub.setdefault(trade.subscription_id, []).append(trade)
    per_follower = []
    for sub_trades in by_sub.values():
        rows = fill_rows([t for t in sub_trades if t.status not in NOT_FILLED])
        missed = sum(1 for t in sub_trades if t.status in NOT_FILLED)
        per_follower.append(summary(rows, skipped=missed))
    filled = [f for f in per_follower if f["fills"]]
    slips = [f["slippage_bps_avg"] for f in filled]
    return {
        "followers": len(per_follower),
        "followers_with_fills": len(filled),
        "slippage_bps_avg": _average_bps(slips),
        "latency_ms_avg": mean(f["latency_ms_avg"] for f in filled) if filled else None,
        "signals_missed_avg": (
            mean(f["signals_missed"] for f in per_follower) if per_follower else None
        ),
    }
