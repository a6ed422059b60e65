"""Subscription and credential endpoints: thin views over selectors and services."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import Conflict, authenticated_user, error_responses
from strategies.selectors import strategy_get_visible
from subscriptions.filters import CredentialFilter, SubscriptionFilter
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.selectors import (
    credential_get_for_user,
    credential_list_for_user,
    strategy_stats,
    subscription_get_for_user,
    subscription_list_for_user,
)
from subscriptions.serializers import (
    CredentialCreateSerializer,
    CredentialSerializer,
    StrategyStatsSerializer,
    SubscribeSerializer,
    SubscriptionSerializer,
    SubscriptionUpdateSerializer,
    protections_pop,
)
from subscriptions.services import (
    CredentialInUseError,
    credential_add,
    credential_delete,
    subscription_create,
    subscription_pause,
    subscription_resume,
    subscription_update_settings,
)

TAGS = ["subscriptions"]
SUBSCRIBE_EXAMPLES = [
    OpenApiExample(
        "Paper",
        request_only=True,
        value={"mode": "paper", "capital": "1000", "risk_per_trade": "0.01", "leverage": "2"},
    ),
    OpenApiExample(
        "Live",
        request_only=True,
        value={
            "mode": "live",
            "capital": "2500.00",
            "risk_per_trade": "0.005",
            "leverage": "3",
            "credential_id": 1,
            "min_order_policy": "bump_to_minimum",
            "join_policy": "join_now",
            "entry_order_type": "limit",
        },
    ),
    OpenApiExample(
        "Paper, with protections",
        request_only=True,
        value={
            "mode": "paper",
            "capital": "1000",
            "risk_per_trade": "0.01",
            "max_drawdown_pct": "15",
            "close_on_max_drawdown": True,
            "daily_loss_limit_pct": "3",
            "max_order_notional": "250",
            "max_open_trades": 3,
            "cooldown_after_losses": 3,
            "cooldown_minutes": 240,
            "slippage_cap_bps": 30,
        },
    ),
]
UPDATE_EXAMPLE = OpenApiExample(
    "Less risk", request_only=True, value={"risk_per_trade": "0.005", "leverage": "1"}
)
CREDENTIAL_EXAMPLE = OpenApiExample(
    "Binance testnet",
    request_only=True,
    value={
        "exchange": "binance",
        "label": "binance testnet",
        "api_key": "your-api-key",
        "secret": "your-secret",
        "is_sandbox": True,
    },
)


def _own_credential(request: Request, credential_id: int | None) -> BrokerCredential | None:
    """The caller's credential; someone else's is as unknown as a missing one (no 404 leak)."""
    from django.core.exceptions import ValidationError
    from django.http import Http404

    if credential_id is None:
        return None
    try:
        return credential_get_for_user(
            user=authenticated_user(request), credential_id=credential_id
        )
    except Http404:
        raise ValidationError({"credential_id": "unknown credential"}) from None


class SubscribeView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Subscribe to a strategy",
        request=SubscribeSerializer,
        examples=SUBSCRIBE_EXAMPLES,
        responses={201: SubscriptionSerializer, **error_responses(400, 401, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        data = SubscribeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        credential = _own_credential(request, fields.pop("credential_id", None))
        protections = protections_pop(fields)
        subscription = subscription_create(
            user=authenticated_user(request),
            strategy=strategy,
            credential=credential,
            protections=protections,
            **fields,
        )
        return Response(SubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED)


class SubscriptionListView(generics.ListAPIView):
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilter

    def get_queryset(self) -> QuerySet[StrategySubscription]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return StrategySubscription.objects.none()
        return subscription_list_for_user(user=authenticated_user(self.request))

    @extend_schema(
        tags=TAGS,
        summary="Your subscriptions",
        responses={200: SubscriptionSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class SubscriptionDetailView(APIView):
    """Read and change a subscription. Its route, with the cancel (DELETE), is the trades
    app's (``trades.views.SubscriptionDetailView``): a cancel may close the position."""

    @extend_schema(
        tags=TAGS,
        summary="One of your subscriptions",
        responses={200: SubscriptionSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        return Response(SubscriptionSerializer(subscription).data)

    @extend_schema(
        tags=TAGS,
        summary="Change the sizing, your own settings, the trading policies or the protections",
        description="Fields left out keep their values.",
        request=SubscriptionUpdateSerializer,
        examples=[UPDATE_EXAMPLE],
        responses={200: SubscriptionSerializer, **error_responses(400, 401, 404)},
    )
    def put(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        data = SubscriptionUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        protections = protections_pop(fields)
        subscription = subscription_update_settings(
            subscription=subscription, protections=protections, **fields
        )
        return Response(SubscriptionSerializer(subscription).data)


class SubscriptionPauseView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Pause: no new trades until resumed",
        request=None,
        responses={200: SubscriptionSerializer, **error_responses(400, 401, 404)},
    )
    def post(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        subscription = subscription_pause(subscription=subscription, reason="paused by user")
        return Response(SubscriptionSerializer(subscription).data)


class SubscriptionResumeView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Resume a paused subscription",
        request=None,
        responses={200: SubscriptionSerializer, **error_responses(400, 401, 404)},
    )
    def post(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        subscription = subscription_resume(subscription=subscription)
        return Response(SubscriptionSerializer(subscription).data)


class CredentialListCreateView(generics.ListAPIView):
    serializer_class = CredentialSerializer
    filterset_class = CredentialFilter

    def get_queryset(self) -> QuerySet[BrokerCredential]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return BrokerCredential.objects.none()
        return credential_list_for_user(user=authenticated_user(self.request))

    @extend_schema(
        tags=["credentials"],
        summary="Your exchange credentials (masked)",
        responses={200: CredentialSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["credentials"],
        summary="Store exchange credentials (encrypted at rest), once the exchange took them",
        description=(
            "The keys are first tried with one signed read-only request (a balance fetch "
            "through ccxt; on the exchange's testnet when `is_sandbox`): keys the exchange "
            "refuses, an exchange that cannot be reached, or `is_sandbox` on an exchange "
            "without a testnet are a 400 naming the exchange's reason (on `api_key`, "
            "`exchange` or `is_sandbox`), and nothing is stored. Keys are never echoed."
        ),
        request=CredentialCreateSerializer,
        examples=[CREDENTIAL_EXAMPLE],
        responses={201: CredentialSerializer, **error_responses(400, 401, 409)},
    )
    def post(self, request: Request) -> Response:
        data = CredentialCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        credential = credential_add(user=authenticated_user(request), **data.validated_data)
        return Response(CredentialSerializer(credential).data, status=status.HTTP_201_CREATED)


class CredentialDetailView(APIView):
    @extend_schema(
        tags=["credentials"],
        summary="Delete a credential",
        description="Refused with 409 while an active or paused subscription uses it.",
        responses={204: None, **error_responses(401, 404, 409)},
    )
    def delete(self, request: Request, pk: int) -> Response:
        credential = credential_get_for_user(user=authenticated_user(request), credential_id=pk)
        try:
            credential_delete(credential=credential)
        except CredentialInUseError as exc:
            raise Conflict(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class StrategyStatsView(APIView):
    @extend_schema(
        tags=["strategies"],
        summary="Execution, subscriber and PnL statistics",
        description="Readable by whoever can see the strategy; figures are aggregates only.",
        responses={200: StrategyStatsSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        return Response(StrategyStatsSerializer(strategy_stats(strategy=strategy)).data)
