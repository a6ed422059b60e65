"""Strategy endpoints: thin views over strategies.selectors and strategies.services."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import QuerySet
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import Conflict, ServiceUnavailable, authenticated_user, error_responses
from strategies.filters import ExecutionFilter, StrategyFilter
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import (
    strategy_execution_list,
    strategy_get_owned,
    strategy_get_visible,
    strategy_list_visible,
)
from strategies.serializers import (
    ExecutionSerializer,
    StrategyCodeSerializer,
    StrategyDeploySerializer,
    StrategySerializer,
    StrategySettingsSerializer,
)
from strategies.services import (
    StrategyChangedMeanwhile,
    StrategyCheckUnavailable,
    strategy_change_settings,
    strategy_deploy,
    strategy_update_code,
)
from strategies.throttles import STRATEGY_CHANGES, StrategyChangeThrottle

TAGS = ["strategies"]
SMA_CROSSOVER = """LOOKBACK = 30

def generate_signal(candles, settings):
    close = candles["close"]
    fast = close.rolling(settings.get("fast", 5)).mean()
    slow = close.rolling(settings.get("slow", 20)).mean()
    if fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]:
        price = float(close.iloc[-1])
        return {"signal": "LONG", "price": price, "stopLoss": price * 0.98}
    if fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]:
        return {"signal": "EXIT_LONG", "price": float(close.iloc[-1])}
    return None
"""
DEPLOY_EXAMPLE = OpenApiExample(
    "SMA crossover",
    request_only=True,
    value={
        "name": "SMA crossover 5/20",
        "description": "Long when the fast SMA crosses above the slow one.",
        "code": SMA_CROSSOVER,
        "exchange": "binance",
        "symbol": "ETH/BTC",
        "resolution": "5m",
        "settings": {"fast": 5, "slow": 20},
        "is_public": True,
        "is_marketplace": False,
    },
)
SETTINGS_EXAMPLE = OpenApiExample(
    "Faster averages", request_only=True, value={"settings": {"fast": 3, "slow": 15}}
)
CODE_EXAMPLE = OpenApiExample(
    "SMA crossover",
    request_only=True,
    value={"code": SMA_CROSSOVER.replace("LOOKBACK = 30", "LOOKBACK = 40")},
)
CHECKED_CHANGE = (
    "The change is dry-run on a worker first, as a deploy is (the request waits for the "
    "verdict): a refusal is a 400 on the field with the error and its line, stores nothing "
    "and notifies you (`strategy.change_refused`). 409 when the strategy's code or settings "
    "changed while the dry run ran (retry); 503 when no worker could check it in time; 429 "
    "beyond the per-user rate of deploys and changes."
)
logger = logging.getLogger(__name__)


@contextmanager
def checked_change(what: str) -> Iterator[None]:
    """The platform's failures to check a change, as answers: no worker could dry-run it
    (the server's fault, not the author's: 503), or the strategy changed meanwhile (409)."""
    try:
        yield
    except StrategyCheckUnavailable as exc:
        logger.error("%s refused, strategy check unavailable: %s", what, exc)
        raise ServiceUnavailable("The strategy could not be checked; retry later.") from exc
    except StrategyChangedMeanwhile as exc:
        raise Conflict(f"{exc}; retry the change") from exc


class StrategyListView(generics.ListAPIView):
    serializer_class = StrategySerializer
    filterset_class = StrategyFilter

    def get_queryset(self) -> QuerySet[Strategy]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Strategy.objects.none()
        return strategy_list_visible(user=authenticated_user(self.request))

    @extend_schema(
        tags=TAGS,
        summary="Your strategies and everyone's public ones",
        responses={200: StrategySerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class StrategyDeployView(APIView):
    throttle_classes = [StrategyChangeThrottle]
    throttle_scope = STRATEGY_CHANGES

    @extend_schema(
        tags=TAGS,
        summary="Deploy a new strategy",
        description=(
            "Checks the market, compiles the code, checks `generate_signal(candles, settings)` "
            "and has a worker dry-run it in the sandbox on recent candles with the given "
            "settings (for a few seconds at most); the request waits for the verdict. Any "
            "problem with the code is a 400 on the field concerned, and nothing is stored. "
            "503 when no worker could check the code in time (nothing stored; retry later); "
            "429 beyond the per-user rate of deploys and settings changes."
        ),
        request=StrategyDeploySerializer,
        examples=[DEPLOY_EXAMPLE],
        responses={201: StrategySerializer, **error_responses(400, 401, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = StrategyDeploySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with checked_change("deploy"):
            strategy = strategy_deploy(owner=authenticated_user(request), **data.validated_data)
        body = StrategySerializer(strategy, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)


class StrategyDetailView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="One strategy (its code only if it is yours)",
        responses={200: StrategySerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        return Response(StrategySerializer(strategy, context={"request": request}).data)

    def http_method_not_allowed(self, request: HttpRequest, *args, **kwargs) -> Response:
        # A strategy is never edited as a whole: say where each change goes instead.
        pk = kwargs.get("pk")
        raise exceptions.MethodNotAllowed(
            request.method or "",
            detail=f'Method "{request.method}" not allowed: change a strategy\'s code with '
            f"PUT /api/strategies/{pk}/code and its settings with PUT "
            f"/api/strategies/{pk}/settings; retiring one is for operators.",
        )


class StrategySettingsView(APIView):
    throttle_classes = [StrategyChangeThrottle]
    throttle_scope = STRATEGY_CHANGES

    @extend_schema(
        tags=TAGS,
        summary="Replace the settings (owner only)",
        description=(
            "Replaces `settings`, bumps `settings_version` and publishes "
            "`strategy.settings.changed` on Redis pub/sub. The next execution runs with the "
            "new settings and records their version. " + CHECKED_CHANGE
        ),
        request=StrategySettingsSerializer,
        examples=[SETTINGS_EXAMPLE],
        responses={200: StrategySerializer, **error_responses(400, 401, 403, 404, 409, 429, 503)},
    )
    def put(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_owned(user=authenticated_user(request), strategy_id=pk)
        data = StrategySettingsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with checked_change("settings change"):
            strategy = strategy_change_settings(strategy=strategy, **data.validated_data)
        return Response(StrategySerializer(strategy, context={"request": request}).data)


class StrategyCodeView(APIView):
    throttle_classes = [StrategyChangeThrottle]
    throttle_scope = STRATEGY_CHANGES

    @extend_schema(
        tags=TAGS,
        summary="Replace the code (owner only)",
        description=(
            "Compiles the code, checks `generate_signal(candles, settings)` and its `LOOKBACK`, "
            "and dry-runs it with the strategy's settings on the market's stored candles; "
            "then stores it as a new immutable version (`code_version` + 1) that the next "
            "execution runs and records. The current code submitted again changes nothing. "
            + CHECKED_CHANGE
        ),
        request=StrategyCodeSerializer,
        examples=[CODE_EXAMPLE],
        responses={200: StrategySerializer, **error_responses(400, 401, 403, 404, 409, 429, 503)},
    )
    def put(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_owned(user=authenticated_user(request), strategy_id=pk)
        data = StrategyCodeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with checked_change("code change"):
            strategy = strategy_update_code(strategy=strategy, **data.validated_data)
        return Response(StrategySerializer(strategy, context={"request": request}).data)


class StrategyExecutionListView(generics.ListAPIView):
    serializer_class = ExecutionSerializer
    filterset_class = ExecutionFilter

    def get_queryset(self) -> QuerySet[StrategyExecution]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no request user
            return StrategyExecution.objects.none()
        strategy = strategy_get_owned(
            user=authenticated_user(self.request), strategy_id=self.kwargs["pk"]
        )
        return strategy_execution_list(strategy=strategy)

    @extend_schema(
        tags=TAGS,
        summary="Execution history (owner only)",
        responses={200: ExecutionSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)
