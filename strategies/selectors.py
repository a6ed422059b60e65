"""Reads on strategies: what a user may see, executions and statistics."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from execution.candles import candles_closed_window
from execution.models import StrategyExecution
from execution.time_utils import (
    datetime_to_ms,
    resolution_to_timedelta,
    round_to_interval_boundary,
)
from strategies.models import Strategy
from strategies.sandbox.samples import synthetic_candles
from subscriptions.models import StrategySubscription

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


def _drift_percentiles(strategy: Strategy) -> dict[str, Any]:
    recent = (
        strategy_execution_list(strategy=strategy)
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


def strategy_stats(*, strategy: Strategy) -> dict[str, Any]:
    executions = StrategyExecution.objects.filter(strategy=strategy)
    by_status = {choice: 0 for choice in StrategyExecution.Status.values}
    for row in executions.values("status").annotate(n=Count("id")).order_by():
        by_status[row["status"]] = row["n"]
    totals = executions.aggregate(
        average_duration_ms=Avg("duration_ms"), trades_generated=Sum("trades_generated")
    )
    subscriptions = StrategySubscription.objects.filter(strategy=strategy)
    money = subscriptions.aggregate(pnl=Sum("realized_pnl"), fees=Sum("fees_paid"))
    Status = StrategySubscription.Status
    return {
        "strategy_id": strategy.pk,
        "executions_total": sum(by_status.values()),
        "executions_by_status": by_status,
        "average_duration_ms": totals["average_duration_ms"],
        **_drift_percentiles(strategy),
        "active_subscribers": subscriptions.filter(status=Status.ACTIVE).count(),
        "paused_subscribers": subscriptions.filter(status=Status.PAUSED).count(),
        "trades_generated": totals["trades_generated"] or 0,
        # Over every subscription, cancelled ones included: their trades happened.
        "subscribers_realized_pnl": money["pnl"] or Decimal("0"),
        "subscribers_fees": money["fees"] or Decimal("0"),
    }


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
