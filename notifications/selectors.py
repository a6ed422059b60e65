"""Reads of a user's notifications, webhooks and deliveries: someone else's are a 404."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404

from notifications.models import Delivery, Notification, NotificationPreference, Webhook


def notification_list_for_user(*, user: User) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user).order_by("-id")


def webhook_list_for_user(*, user: User) -> QuerySet[Webhook]:
    # The ciphertext is never read on the way to a client.
    return Webhook.objects.filter(user=user).defer("secret_encrypted").order_by("-id")


def webhook_get_for_user(*, user: User, webhook_id: int) -> Webhook:
    webhook = webhook_list_for_user(user=user).filter(pk=webhook_id).first()
    if webhook is None:
        raise Http404
    return webhook


def delivery_list_for_webhook(*, webhook: Webhook) -> QuerySet[Delivery]:
    return Delivery.objects.filter(webhook=webhook).select_related("notification").order_by("-id")


def email_events_for_user(*, user: User) -> list[str]:
    preference = NotificationPreference.objects.filter(user=user).first()
    return list(preference.email_events) if preference else []
