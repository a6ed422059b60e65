"""Reads on executions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count
from django.utils import timezone

from core.clock import market_to_real
from execution.models import StrategyExecution


def execution_as_dict(execution: StrategyExecution) -> dict[str, Any]:
    fields = (
        "id",
        "strategy_id",
        "interval_start",
        "interval_end",
        "trigger",
        "status",
        "signal",
        "error",
        "logs",
        "started_at",
        "finished_at",
        "duration_ms",
        "drift_ms",
        "worker_id",
        "attempts",
        "settings_version",
        "code_version",
        "candles_used",
        "close_price",
        "subscriber_count",
        "trades_generated",
        "fanout_total",
        "fanout_done",
    )
    return {name: getattr(execution, name) for name in fields}


def execution_counts_by_status(*, strategy_id: int) -> dict[str, int]:
    rows = (
        StrategyExecution.objects.filter(strategy_id=strategy_id)
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}


def execution_settled(*, strategy_id: int, interval_end: datetime) -> bool:
    """The execution of that close has finished, and so has its fan-out if it had one."""
    row = (
        StrategyExecution.objects.filter(strategy_id=strategy_id, interval_end=interval_end)
        .values("status", "fanout_dispatched_at", "fanout_total", "fanout_done")
        .first()
    )
    if row is None or row["status"] == StrategyExecution.Status.RUNNING:
        return False
    if row["status"] != StrategyExecution.Status.SUCCESS:
        return True
    return row["fanout_dispatched_at"] is not None and row["fanout_done"] >= row["fanout_total"]


REALTIME_TRIGGERS = (
    StrategyExecution.Trigger.BEAT,
    StrategyExecution.Trigger.STREAM,
    StrategyExecution.Trigger.BACKFILL,
)


def execution_signal_age_s(execution: StrategyExecution, *, now: datetime | None = None) -> float:
    """How old the execution's signal is, in real seconds.

    A real-time close ages from the candle's close: a close backfilled after an outage is as
    old as the outage, even if it ran a moment ago, so its entries are not sent on stale
    prices. An operator's manual run or a replay ages from when it ran.
    """
    now = now or timezone.now()
    if execution.trigger in REALTIME_TRIGGERS:
        since = market_to_real(execution.interval_end)
    else:
        since = execution.finished_at or now
    return (now - since).total_seconds()
