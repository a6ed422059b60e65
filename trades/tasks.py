"""Trades tasks: the fan-out of a signal and periodic order upkeep (beat: CELERY_BEAT_SCHEDULE
in settings); thin wrappers around the services."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from core.retry import RETRY
from trades.custody import credential_batches, credentials_recheck
from trades.positions import equity_points_daily
from trades.reconcile import reconcile_credentials
from trades.services import fanout_process
from trades.services import orders_cancel_stale as cancel_stale
from trades.services import orders_sync_open as sync_open


@shared_task(**RETRY)
def orders_sync_open() -> int:
    return sync_open()


@shared_task(**RETRY)
def orders_cancel_stale() -> int:
    return cancel_stale()


@shared_task(**RETRY)
def equity_daily() -> int:
    """One equity point a day for subscriptions whose closes wrote none (the flat ones)."""
    return equity_points_daily(at=timezone.now())


# Named for the module it was first defined in: queued messages and retries carry that name.
@shared_task(name="execution.tasks.fanout_orders", **RETRY)
def fanout_orders(execution_id: int, subscription_ids: list[int]) -> int:
    return fanout_process(execution_id=execution_id, subscription_ids=subscription_ids).opened


@shared_task(**RETRY)
def credentials_recheck_dispatch() -> int:
    """Beat: one re-check task per batch of live credentials."""
    batches = credential_batches(size=settings.CUSTODY_BATCH_SIZE)
    for ids in batches:
        credentials_recheck_batch.delay(ids)
    return len(batches)


@shared_task(**RETRY)
def credentials_recheck_batch(credential_ids: list[int]) -> int:
    return len(credentials_recheck(credential_ids=credential_ids).paused)


@shared_task(**RETRY)
def reconcile_dispatch() -> int:
    """Beat: one reconciliation task per batch of live credentials."""
    batches = credential_batches(size=settings.RECONCILE_BATCH_SIZE)
    for ids in batches:
        reconcile_batch.delay(ids)
    return len(batches)


@shared_task(**RETRY)
def reconcile_batch(credential_ids: list[int]) -> int:
    return reconcile_credentials(credential_ids=credential_ids).opened
