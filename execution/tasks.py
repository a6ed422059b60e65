"""Celery tasks: thin, id-taking, idempotent wrappers around the execution services."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task

from core.retry import RETRY
from execution.services import candle_close_dispatch, execution_run, executions_run


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@shared_task(**RETRY)
def candle_close(resolution: str, close_time: str | None = None, trigger: str = "beat") -> int:
    return len(
        candle_close_dispatch(resolution=resolution, close_time=_parse(close_time), trigger=trigger)
    )


@shared_task(**RETRY)
def execute_strategy(
    strategy_id: int, interval_start: str, trigger: str = "beat", scheduled_at: str | None = None
) -> str:
    start = _parse(interval_start)
    assert start is not None
    outcome = execution_run(
        strategy_id=strategy_id,
        interval_start=start,
        trigger=trigger,
        scheduled_at=_parse(scheduled_at),
    )
    return outcome.outcome


@shared_task(**RETRY)
def execute_strategies(
    strategy_ids: list[int],
    interval_start: str,
    trigger: str = "beat",
    scheduled_at: str | None = None,
) -> list[str]:
    """A batch of one market's strategies on one close: each its own execution."""
    start = _parse(interval_start)
    assert start is not None
    outcomes = executions_run(
        strategy_ids=strategy_ids,
        interval_start=start,
        trigger=trigger,
        scheduled_at=_parse(scheduled_at),
    )
    return [outcome.outcome for outcome in outcomes]
