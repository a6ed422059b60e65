from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import authenticated_user, error_responses
from subscriptions.selectors import subscription_get_for_user
from trades.filters import OrderFilter, TradeFilter
from trades.models import Order, Trade
from trades.selectors import (
    order_list_for_subscription,
    subscription_stats,
    trade_list_for_subscription,
)
from trades.serializers import OrderSerializer, SubscriptionStatsSerializer, TradeSerializer


class SubscriptionTradeListView(generics.ListAPIView):
    serializer_class = TradeSerializer
    filterset_class = TradeFilter

    def get_queryset(self) -> QuerySet[Trade]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no request user
            return Trade.objects.none()
        subscription = subscription_get_for_user(
            user=authenticated_user(self.request), subscription_id=self.kwargs["pk"]
        )
        return trade_list_for_subscription(subscription=subscription)

    @extend_schema(
        tags=["subscriptions"],
        summary="A subscription's trades",
        responses={200: TradeSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class SubscriptionOrderListView(generics.ListAPIView):
    serializer_class = OrderSerializer
    filterset_class = OrderFilter

    def get_queryset(self) -> QuerySet[Order]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no request user
            return Order.objects.none()
        subscription = subscription_get_for_user(
            user=authenticated_user(self.request), subscription_id=self.kwargs["pk"]
        )
        return order_list_for_subscription(subscription=subscription)

    @extend_schema(
        tags=["subscriptions"],
        summary="A subscription's orders",
        description="Every order intent written for it (entries and exits) and its lifecycle "
        "on the exchange, newest first.",
        responses={200: OrderSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class SubscriptionStatsView(APIView):
    @extend_schema(
        tags=["subscriptions"],
        summary="Performance of one of your subscriptions",
        responses={200: SubscriptionStatsSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        stats = subscription_stats(subscription=subscription)
        return Response(SubscriptionStatsSerializer(stats).data)
