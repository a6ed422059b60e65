"""What happened to a user's money or strategy, recorded once per (user, key) for delivery."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class NotificationEvent(models.TextChoices):
    # To the subscriber.
    TRADE_FILLED = "trade.filled", "Trade filled"
    TRADE_CLOSED = "trade.closed", "Trade closed"
    ORDER_REJECTED = "order.rejected", "Order rejected"
    PROTECTION_TRIGGERED = "protection.triggered", "Protection triggered"
    SUBSCRIPTION_PAUSED = "subscription.paused", "Subscription paused"
    DIVERGENCE_FOUND = "subscription.divergence", "The exchange differs from the platform"
    # To the strategy's author.
    EXECUTION_FAILED = "execution.failed", "Execution failed"
    CHANGE_REFUSED = "strategy.change_refused", "Strategy change refused by its dry run"


class Notification(models.Model):
    """One event for one user. ``key`` names the thing that happened (``trade.filled:42``), so a
    retried fan-out or a redelivered task records it once: the unique constraint is the fence."""

    # No index of its own: the unique (user, key) begins with it and serves every lookup.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
    )
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    key = models.CharField(max_length=120)
    # Only what the user may see about their own money or strategy: never a key or secret,
    # never another user's data.
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once the email to a user who asked for this event went out (the email's outbox).
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=("user", "key"), name="uniq_notification_user_key")
        ]

    def __str__(self) -> str:
        return f"{self.event} for user {self.user_id}"


class NotificationPreference(models.Model):
    """What a user wants by email (the events listed in ``email_events``); none by default."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_events = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notification preferences of user {self.user_id}"


class Webhook(models.Model):
    """A user's HTTP endpoint for the events it lists. Its secret signs every delivery; only
    ciphertext is stored (core.crypto), the plain text is shown once, at creation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField()
    is_active = models.BooleanField(default=True)
    # Failed deliveries in a row (each after its retries); a success resets it. At
    # WEBHOOK_DISABLE_AFTER the webhook is disabled, with the reason.
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=("user", "is_active"), name="webhook_user_active")]

    def __str__(self) -> str:
        return f"webhook {self.pk} of user {self.user_id}"


class Delivery(models.Model):
    """One notification to one webhook: the outbox row, written in the producer's transaction,
    and the log of its attempts. Unique per (webhook, notification): created once, however
    often the producer retries; ``idempotency_key`` is sent on every attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # not attempted yet
        RETRYING = "retrying", "Retrying"  # failed, another attempt is due at next_attempt_at
        DELIVERED = "delivered", "Delivered"  # the receiver answered 2xx
        FAILED = "failed", "Failed"  # refused, or every attempt failed

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # One entry per attempt: {"at", "response_code", "error", "duration_ms"}.
    attempt_log = models.JSONField(default=list, blank=True)
    # The claim of the worker sending it now; a claim older than WEBHOOK_SEND_LEASE_S
    # belongs to a worker presumed dead.
    send_token = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=("webhook", "notification"), name="uniq_delivery_webhook_notification"
            )
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in (self.Status.DELIVERED, self.Status.FAILED)
