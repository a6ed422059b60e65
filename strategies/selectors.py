"""Reads on strategies: what a user may see, executions and statistics."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from core.clock import market_to_real
from core.time_utils import (
    datetime_to_ms,
    resolution_to_timedelta,
    round_to_interval_boundary,
)
from markets.candles import candles_closed_window
from strategies.models import Strategy, StrategyExecution
from strategies.sandbox.samples import synthetic_candles

# Drift percentiles are computed in Python over the most recent executions: a bounded read
# that works the same on SQLite and PostgreSQL.
DRIFT_SAMPLE_SIZE = 1000


def strategy_list_visible(*, user: AbstractBaseUser) -> QuerySet[Strategy]:
    """The caller's strategies plus everyone's public ones."""
    return Strategy.objects.filter(Q(owner=user) | Q(is_public=True)).select_related("owner")


def strategy_get_visible(*, user: AbstractBaseUser, strategy_id: int) -> Strategy:
    """404 for a strategy the caller may not see: its existence is not revealed."""
    strategy = strategy_list_visible(user=user).filter(pk=strategy_id).first()
    if strategy is None:
        raise Http404
    return strategy


def strategy_get_owned(*, user: AbstractBaseUser, strategy_id: int) -> Strategy:
    """The caller's own strategy; 403 for a public one of someone else, 404 otherwise."""
    strategy = strategy_get_visible(user=user, strategy_id=strategy_id)
    if strategy.owner_id != user.pk:
        raise PermissionDenied("only the strategy's owner may do this")
    return strategy


def strategy_execution_list(*, strategy: Strategy) -> QuerySet[StrategyExecution]:
    return StrategyExecution.objects.filter(strategy=strategy).order_by("-interval_start", "-id")


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


REALTIME_TRIGGERS = (
    StrategyExecution.Trigger.BEAT,
    StrategyExecution.Trigger.STREAM,
    StrategyExecution.Trigger.BACKFILL,
)


def strategy_drift_percentiles(*, strategy: Strategy) -> dict[str, Any]:
    """Close → start percentiles of real-time executions: a manual run or a replay of a past
    candle is years "late" by the clock and says nothing about the pipeline's timeliness."""
    recent = (
        strategy_execution_list(strategy=strategy)
        .filter(trigger__in=REALTIME_TRIGGERS)
        .exclude(drift_ms__isnull=True)
        .values_list("drift_ms", flat=True)[:DRIFT_SAMPLE_SIZE]
    )
    ordered = sorted(float(drift) for drift in recent if drift is not None)
    return {
        "drift_p50_ms": _percentile(ordered, 0.50),
        "drift_p95_ms": _percentile(ordered, 0.95),
        "drift_p99_ms": _percentile(ordered, 0.99),
        "drift_sample_size": len(ordered),
    }


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


def strategy_dry_run_candles(
    *, exchange: str, symbol: str, resolution: str, lookback: int
) -> list[list[float]]:
    """The candles a dry run sees: the market's newest closed ones, or a synthetic market of
    ``lookback`` candles ending at the last boundary when the store has too few."""
    stored = candles_closed_window(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        close_time=timezone.now(),
        limit=lookback,
    )
    if len(stored) >= lookback:
        return stored
    step = resolution_to_timedelta(resolution)
    end = round_to_interval_boundary(timezone.now(), resolution)
    return synthetic_candles(
        count=lookback, step_ms=int(step.total_seconds() * 1000), end_ms=datetime_to_ms(end)
    )
