from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.api import StrictFieldsMixin
from notifications.models import Delivery, Notification, NotificationEvent, Webhook
from notifications.webhooks import webhook_url_refusal


def _events(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=NotificationEvent.choices),
        max_length=len(NotificationEvent.choices) * 2,
        **kwargs,
    )


class WebhookCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    url = serializers.URLField(
        max_length=2000,
        help_text="http or https; it receives a signed POST per event.",
    )
    events = _events(min_length=1, help_text="The events it receives.")

    def validate_url(self, value: str) -> str:
        refusal = webhook_url_refusal(value)
        if refusal:
            raise serializers.ValidationError(refusal)
        return value


WEBHOOK_FIELDS: tuple[str, ...] = (
    "id",
    "url",
    "events",
    "is_active",
    "consecutive_failures",
    "disabled_reason",
    "disabled_at",
    "created_at",
)


class WebhookSerializer(serializers.ModelSerializer):
    """What a client sees of a webhook: never its secret (shown once, at creation)."""

    events = serializers.ListField(child=serializers.ChoiceField(choices=NotificationEvent.choices))

    class Meta:
        model = Webhook
        fields = WEBHOOK_FIELDS
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.SerializerMethodField(
        help_text="Signs every delivery; shown only in this answer: keep it."
    )

    class Meta(WebhookSerializer.Meta):
        fields = (*WEBHOOK_FIELDS, "secret")
        read_only_fields = fields

    def get_secret(self, webhook: Webhook) -> str:
        return str(self.context["secret"])


class AttemptSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    at = serializers.DateTimeField()
    response_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    duration_ms = serializers.FloatField()


class DeliverySerializer(serializers.ModelSerializer):
    event = serializers.CharField(source="notification.event", read_only=True)
    key = serializers.CharField(source="notification.key", read_only=True)
    notification_id = serializers.IntegerField(read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = (
            "id",
            "idempotency_key",
            "notification_id",
            "event",
            "key",
            "status",
            "attempts",
            "response_code",
            "last_error",
            "attempt_log",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class NotificationSerializer(serializers.ModelSerializer):
    payload = serializers.DictField(read_only=True)

    class Meta:
        model = Notification
        fields = ("id", "event", "key", "payload", "created_at")
        read_only_fields = fields


class NotificationPreferenceSerializer(StrictFieldsMixin, serializers.Serializer):
    email_events = _events(
        help_text="The events you receive by email too (at your account's address); "
        "an empty list: none."
    )
