"""Operator admin for notifications, webhooks and their deliveries: read-only.

Operators see what was sent where and why it failed; a webhook's secret is never shown (not
even its ciphertext), and only its owner changes or deletes it, through the API.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_utils import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    change_link,
    fieldset_names,
    preformatted,
    pretty_json,
)
from notifications.models import Delivery, Notification, NotificationPreference, Webhook


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "event", "key", "created_at", "emailed_at")
    list_filter = ("event", "created_at")
    search_fields = ("key", "user__username", "=user__id")
    ordering = ("-id",)
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fields = ("user", "event", "key", "payload_json", "created_at", "emailed_at")
    readonly_fields = fields

    @admin.display(description="payload")
    def payload_json(self, notification: Notification) -> str:
        return pretty_json(notification.payload)


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    parent_field = "webhook"
    verbose_name_plural = "deliveries (most recent 20)"
    fields = ("notification", "status", "attempts", "response_code", "updated_at")
    readonly_fields = fields


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "url",
        "is_active",
        "consecutive_failures",
        "disabled_at",
        "created_at",
    )
    list_filter = ("is_active", "created_at")
    search_fields = ("url", "user__username", "=user__id", "disabled_reason")
    ordering = ("-id",)
    list_select_related = ("user",)
    fieldsets = (
        (None, {"fields": ("user", "url", "events_json", "created_at")}),
        (
            "Health",
            {"fields": ("is_active", "consecutive_failures", "disabled_reason", "disabled_at")},
        ),
    )
    readonly_fields = fieldset_names(fieldsets)
    inlines = (DeliveryInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("secret_encrypted")

    @admin.display(description="events")
    def events_json(self, webhook: Webhook) -> str:
        return pretty_json(webhook.events)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "webhook_link",
        "event",
        "status",
        "attempts",
        "response_code",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "notification__event", "created_at")
    search_fields = ("=idempotency_key", "=webhook__id", "webhook__user__username", "last_error")
    ordering = ("-id",)
    list_select_related = ("webhook", "notification")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("webhook_link", "notification_link", "idempotency_key", "status")}),
        (
            "Attempts",
            {
                "fields": (
                    "attempts",
                    "response_code",
                    "error_text",
                    "attempt_log_json",
                    "next_attempt_at",
                    "claimed_at",
                )
            },
        ),
        ("Timestamps", {"fields": ("created_at", "updated_at", "delivered_at")}),
    )
    readonly_fields = fieldset_names(fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("webhook__secret_encrypted")

    @admin.display(description="webhook", ordering="webhook_id")
    def webhook_link(self, delivery: Delivery) -> str:
        return change_link(delivery.webhook, f"#{delivery.webhook_id}")

    @admin.display(description="notification")
    def notification_link(self, delivery: Delivery) -> str:
        return change_link(delivery.notification, delivery.notification.key)

    @admin.display(description="event", ordering="notification__event")
    def event(self, delivery: Delivery) -> str:
        return delivery.notification.event

    @admin.display(description="last error")
    def error_text(self, delivery: Delivery) -> str:
        return preformatted(delivery.last_error)

    @admin.display(description="attempt log")
    def attempt_log_json(self, delivery: Delivery) -> str:
        return pretty_json(delivery.attempt_log)


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = ("user", "updated_at")
    search_fields = ("user__username", "=user__id")
    list_select_related = ("user",)
    fields = ("user", "email_events", "updated_at")
    readonly_fields = fields
