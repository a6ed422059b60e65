from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import authenticated_user, error_responses
from subscriptions.selectors import subscription_get_for_user
from trades.filters import TradeFilter
from trades.models import Trade
from trades.selectors import trade_list_for_subscription
from trades.serializers import TradeSerializer


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
