"""Reads on executions."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

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
