"""Notification tasks: a webhook delivery and an email, each a thin wrapper around its
service, queued on NOTIFICATIONS_QUEUE once the producer's transaction commits."""

from __future__ import annotations

import smtplib
from typing import Any

from celery import shared_task

from core.retry import RETRY, TRANSIENT
from notifications.emails import notification_email_send
from notifications.webhooks import delivery_attempt

# The delivery row bounds the attempts (WEBHOOK_MAX_ATTEMPTS) and paces them; the task's own
# bound only stops one that keeps meeting a busy claim or a database that is down. Acked late
# and re-queued when its worker dies: the claim's lease lets the next worker take it over.
DELIVERY_TASK: dict[str, Any] = {
    **RETRY,
    "max_retries": 100,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


@shared_task(bind=True, **DELIVERY_TASK)
def webhook_deliver(self: Any, delivery_id: int) -> str:
    outcome = delivery_attempt(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


# An unreachable mail server is retried like a lost database.
@shared_task(**{**RETRY, "autoretry_for": (*TRANSIENT, smtplib.SMTPException, OSError)})
def notification_email(notification_id: int) -> bool:
    return notification_email_send(notification_id=notification_id)
