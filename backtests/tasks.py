"""Backtest tasks: a thin wrapper around backtests.services, on the backtest queue."""

from __future__ import annotations

from celery import shared_task

from backtests.record import records_refresh as _records_refresh
from backtests.services import backtest_run
from core.retry import RETRY


# Idempotent: a redelivered message finds the backtest running or ended and changes nothing;
# the retries cover a broker or database blip before the run was claimed.
@shared_task(**RETRY)
def backtest_execute(backtest_id: int) -> str:
    return backtest_run(backtest_id=backtest_id).status


# Idempotent: each run recomputes every record's figures from its stored series.
@shared_task(**RETRY)
def records_refresh() -> int:
    return _records_refresh()
