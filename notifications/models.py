"""What happened to a user's money or strategy, recorded once per (user, key) for delivery."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class NotificationEvent(models.TextChoices):
    # To the subscriber.
    TRADE_FILLED = "trade.filled", "Trade filled"
    TRADE_CLOSED = "trade.closed", "Trade closed"
    ORDER_REJECTED = "order.rejected", "Order rejected"
    PROTECTION_TRIGGERED = "protection.triggered", "Protection triggered"
    SUBSCRIPTION_PAUSED = "subscription.paused", "Subscription paused"
    # To the strategy's author.
    EXECUTION_FAILED = "execution.failed", "Execution failed"
    CHANGE_REFUSED = "strategy.change_refused", "Strategy change refused by its dry run"


class Notification(models.Model):
    """One event for one user. ``key`` names the thing that happened (``trade.filled:42``), so a
    retried fan-out or a redelivered task records it once: the unique constraint is the fence."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    key = models.CharField(max_length=120)
    # Only what the user may see about their own money or strategy: never a key or secret,
    # never another user's data.
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=("user", "key"), name="uniq_notification_user_key")
        ]

    def __str__(self) -> str:
        return f"{self.event} for user {self.user_id}"
