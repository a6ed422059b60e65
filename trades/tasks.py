"""Periodic order upkeep (beat: CELERY_BEAT_SCHEDULE in settings); thin wrappers."""

from __future__ import annotations

from celery import shared_task

from execution.tasks import RETRY
from trades.services import orders_cancel_stale as cancel_stale
from trades.services import orders_sync_open as sync_open


@shared_task(**RETRY)
def orders_sync_open() -> int:
    return sync_open()


@shared_task(**RETRY)
def orders_cancel_stale() -> int:
    return cancel_stale()
