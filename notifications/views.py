"""Webhook, notification and preference endpoints: thin views over selectors and services."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import authenticated_user, error_responses
from notifications.models import Delivery, Notification, Webhook
from notifications.selectors import (
    delivery_list_for_webhook,
    email_events_for_user,
    notification_list_for_user,
    webhook_get_for_user,
    webhook_list_for_user,
)
from notifications.serializers import (
    DeliverySerializer,
    NotificationPreferenceSerializer,
    NotificationSerializer,
    WebhookCreatedSerializer,
    WebhookCreateSerializer,
    WebhookSerializer,
)
from notifications.services import (
    notification_preference_set,
    webhook_create,
    webhook_delete,
)

TAGS = ["notifications"]
WEBHOOK_EXAMPLE = OpenApiExample(
    "Fills and closes",
    request_only=True,
    value={
        "url": "https://example.com/hooks/signalfan",
        "events": ["trade.filled", "trade.closed"],
    },
)
WEBHOOK_DESCRIPTION = (
    "Each event is POSTed as JSON (`id`, `event`, `key`, `occurred_at`, `payload`) with "
    "`X-Signalfan-Timestamp` and `X-Signalfan-Signature: sha256=<hex>`, the HMAC-SHA256 of "
    '`timestamp + "." + body` with the secret answered here (once), and `Idempotency-Key`, '
    "the same on every attempt. A non-2xx answer, a timeout or a network error is retried with "
    "exponential backoff; a webhook whose deliveries keep failing is disabled, with the reason."
)


class WebhookListCreateView(generics.ListAPIView):
    serializer_class = WebhookSerializer

    def get_queryset(self) -> QuerySet[Webhook]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Webhook.objects.none()
        return webhook_list_for_user(user=authenticated_user(self.request))

    @extend_schema(
        tags=TAGS,
        summary="Your webhooks",
        responses={200: WebhookSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Add a webhook (its secret is shown in this answer only)",
        description=WEBHOOK_DESCRIPTION,
        request=WebhookCreateSerializer,
        examples=[WEBHOOK_EXAMPLE],
        responses={201: WebhookCreatedSerializer, **error_responses(400, 401, 409)},
    )
    def post(self, request: Request) -> Response:
        data = WebhookCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook, secret = webhook_create(user=authenticated_user(request), **data.validated_data)
        body = WebhookCreatedSerializer(webhook, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="One of your webhooks",
        responses={200: WebhookSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        webhook = webhook_get_for_user(user=authenticated_user(request), webhook_id=pk)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        tags=TAGS,
        summary="Delete a webhook, with its deliveries",
        responses={204: None, **error_responses(401, 404)},
    )
    def delete(self, request: Request, pk: int) -> Response:
        webhook = webhook_get_for_user(user=authenticated_user(request), webhook_id=pk)
        webhook_delete(webhook=webhook)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListView(generics.ListAPIView):
    serializer_class = DeliverySerializer

    def get_queryset(self) -> QuerySet[Delivery]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Delivery.objects.none()
        webhook = webhook_get_for_user(
            user=authenticated_user(self.request), webhook_id=self.kwargs["pk"]
        )
        return delivery_list_for_webhook(webhook=webhook)

    @extend_schema(
        tags=TAGS,
        summary="A webhook's deliveries, newest first",
        description="Each with its status (`pending`, `retrying`, `delivered`, `failed`), its "
        "attempts (when, the receiver's status code or the error) and the next one due.",
        responses={200: DeliverySerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class NotificationListView(generics.ListAPIView):
    serializer_class = NotificationSerializer

    def get_queryset(self) -> QuerySet[Notification]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Notification.objects.none()
        return notification_list_for_user(user=authenticated_user(self.request))

    @extend_schema(
        tags=TAGS,
        summary="What happened to your money and strategies, newest first",
        responses={200: NotificationSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class NotificationPreferenceView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="The events you receive by email",
        responses={200: NotificationPreferenceSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        events = email_events_for_user(user=authenticated_user(request))
        return Response(NotificationPreferenceSerializer({"email_events": events}).data)

    @extend_schema(
        tags=TAGS,
        summary="Choose the events you receive by email",
        request=NotificationPreferenceSerializer,
        examples=[
            OpenApiExample(
                "Closes and pauses",
                request_only=True,
                value={"email_events": ["trade.closed", "subscription.paused"]},
            )
        ],
        responses={200: NotificationPreferenceSerializer, **error_responses(400, 401)},
    )
    def put(self, request: Request) -> Response:
        data = NotificationPreferenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        events = notification_preference_set(
            user=authenticated_user(request), **data.validated_data
        )
        return Response(NotificationPreferenceSerializer({"email_events": events}).data)
