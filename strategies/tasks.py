"""Celery tasks of strategies: thin wrappers around strategies.services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.retry import TRANSIENT
from strategies.services import strategy_dry_run_answer


# A deploy waits for this task's answer for STRATEGY_DRY_RUN_WAIT_S at most, and the message
# expires with that wait, so retries are few and quick: a late answer helps nobody. Running
# it twice is harmless (the waiting request takes the first verdict, the key expires).
@shared_task(
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=2,
    retry_jitter=False,
    max_retries=2,
)
def strategy_dry_run(
    *,
    request_id: str,
    code: str,
    exchange: str,
    symbol: str,
    resolution: str,
    settings: dict[str, Any],
    lookback: int,
) -> bool:
    verdict = strategy_dry_run_answer(
        request_id=request_id,
        code=code,
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        settings=settings,
        lookback=lookback,
    )
    return verdict.ok
