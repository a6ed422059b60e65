from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    Conflict,
    FilesAsTheyAre,
    authenticated_user,
    error_responses,
    query_data,
)
from core.time_utils import resolution_to_timedelta
from strategies.selectors import strategy_get_visible
from subscriptions.models import StrategySubscription
from subscriptions.selectors import strategy_stats, subscription_get_for_user
from subscriptions.serializers import SubscriptionSerializer
from subscriptions.views import StrategyStatsView as StrategyStatsReadView
from subscriptions.views import SubscriptionDetailView as SubscriptionReadChangeView
from trades.charts import ImageFormat, equity_chart
from trades.filters import OrderFilter, TradeFilter
from trades.manual import (
    CloseOutcome,
    NothingToClose,
    subscription_cancel_and_close,
    subscription_close_now,
)
from trades.models import Divergence, Order, ProtectionTrip, Trade
from trades.report import strategy_followers_divergence, subscription_divergence_report
from trades.resync import ResyncRefused, divergence_for_resync, divergence_resync
from trades.selectors import (
    divergence_list_for_subscription,
    equity_series,
    order_list_for_subscription,
    protection_trips_for_subscription,
    subscription_currency,
    subscription_stats,
    trade_list_for_subscription,
)
from trades.serializers import (
    CancelBodySerializer,
    CancelQuerySerializer,
    DivergenceReportSerializer,
    DivergenceSerializer,
    EquityQuerySerializer,
    EquitySeriesSerializer,
    OrderSerializer,
    PositionCloseSerializer,
    ProtectionTripSerializer,
    ResyncBodySerializer,
    StrategyStatsWithFollowersSerializer,
    SubscriptionCancelSerializer,
    SubscriptionStatsSerializer,
    TradeSerializer,
)

TAGS = ["subscriptions"]


def _outcome(outcome: CloseOutcome) -> dict[str, Any]:
    return {
        "closed_trades": TradeSerializer(outcome.closed, many=True).data,
        "open_trades": TradeSerializer(outcome.still_open, many=True).data,
    }


def _close_positions_choice(request: Request) -> bool:
    """``close_positions`` from a JSON body when one is sent, else from the query string."""
    if request.data:
        body = CancelBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return bool(body.validated_data["close_positions"])
    query = CancelQuerySerializer(data=query_data(request))
    query.is_valid(raise_exception=True)
    return bool(query.validated_data["close_positions"])


class SubscriptionDetailView(SubscriptionReadChangeView):
    """A subscription: read and change it (``subscriptions.views``), cancel it here."""

    @extend_schema(
        tags=TAGS,
        summary="Cancel the subscription, and close its position if asked",
        description="The subscription is kept, with status `cancelled`: no entries from now "
        'on. `close_positions=true` (in the query string, or as `{"close_positions": true}` '
        "in a JSON body) also closes its open position now, at market, through the same "
        "exactly-once order path as every order. Without it, an open position stays open "
        "until the strategy exits it; either way the answer lists the trades still open.",
        parameters=[CancelQuerySerializer],
        responses={200: SubscriptionCancelSerializer, **error_responses(400, 401, 404)},
    )
    def delete(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        close = _close_positions_choice(request)
        cancelled, outcome = subscription_cancel_and_close(
            subscription=subscription, close_positions=close
        )
        return Response({**SubscriptionSerializer(cancelled).data, **_outcome(outcome)})


class SubscriptionCloseView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Close the open position now, at market",
        description="Paper and live alike, under the trade's own close order (client order id "
        "`sf-<entry execution>-<subscription>-c<trade>`): a repeated request never sends a "
        "second order. A live close waits for the exchange; one whose answer is lost is "
        "finished by the order sync and listed in `open_trades` until then. The subscription "
        "keeps its status (pause or cancel it to stop new entries). 409 when nothing is open.",
        request=None,
        responses={200: PositionCloseSerializer, **error_responses(401, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        try:
            outcome = subscription_close_now(subscription=subscription)
        except NothingToClose as exc:
            raise Conflict(str(exc)) from exc
        return Response({"subscription_id": subscription.pk, **_outcome(outcome)})


class SubscriptionDivergenceReportView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="How far your fills were from the signals you followed",
        description="For each fill that followed a signal: the signal's price, the fill "
        "price, the slippage in basis points signed against you (above zero it cost you) and "
        "the latency from signal to fill; then the signals you did not get, with the reason "
        "(a skipped entry, a rejected order, ...), and a summary.",
        responses={200: DivergenceReportSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        subscription = subscription_get_for_user(
            user=authenticated_user(request), subscription_id=pk
        )
        report = subscription_divergence_report(subscription=subscription)
        return Response(DivergenceReportSerializer(report).data)


class StrategyStatsView(StrategyStatsReadView):
    """The strategy's statistics with its followers' divergence from the signals."""

    @extend_schema(
        tags=["strategies"],
        summary="Execution, subscriber and PnL statistics",
        description="Readable by whoever can see the strategy; figures are aggregates only "
        "(the followers' slippage and latency are averages over them, never per person).",
        responses={200: StrategyStatsWithFollowersSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        stats = {
            **strategy_stats(strategy=strategy),
            "followers_divergence": strategy_followers_divergence(strategy=strategy),
        }
        return Response(StrategyStatsWithFollowersSerializer(stats).data)


class SubscriptionResyncView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Resync a divergence with the exchange: adopt its quantity, or close the gap",
        description="For an open `balance` or `position` divergence found by the "
        "reconciliation. `adopt` makes the exchange's quantity the subscription's position; "
        "`close` sends one market order of the difference (client order id "
        "`sf-<execution>-<subscription>-r<divergence>`: asking twice sends one order) so the "
        "account matches the platform again. Recorded with who asked. 409 when there is "
        "nothing to resync or it cannot be done that way (the reason says why).",
        request=ResyncBodySerializer,
        responses={200: DivergenceSerializer, **error_responses(400, 401, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        user = authenticated_user(request)
        subscription = subscription_get_for_user(user=user, subscription_id=pk)
        body = ResyncBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            divergence = divergence_for_resync(
                subscription_id=subscription.pk,
                divergence_id=body.validated_data.get("divergence_id"),
            )
            resynced = divergence_resync(
                divergence=divergence, mode=body.validated_data["mode"], user=user, via="api"
            )
        except ResyncRefused as exc:
            raise Conflict(str(exc)) from exc
        return Response(DivergenceSerializer(resynced).data)


class SubscriptionDivergenceListView(generics.ListAPIView):
    serializer_class = DivergenceSerializer

    def get_queryset(self) -> QuerySet[Divergence]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no request user
            return Divergence.objects.none()
        subscription = subscription_get_for_user(
            user=authenticated_user(self.request), subscription_id=self.kwargs["pk"]
        )
        return divergence_list_for_subscription(subscription=subscription)

    @extend_schema(
        tags=TAGS,
        summary="Where the exchange differs from the platform (the reconciliation's findings)",
        description="Newest first, open and resolved: balances or positions that differ "
        "(expected, actual, since when), orders with the platform's prefix it does not know, "
        "orders it holds open that the exchange does not list, and your own manual orders on "
        "the account (shown, not acted on).",
        responses={200: DivergenceSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class SubscriptionProtectionTripListView(generics.ListAPIView):
    serializer_class = ProtectionTripSerializer

    def get_queryset(self) -> QuerySet[ProtectionTrip]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no request user
            return ProtectionTrip.objects.none()
        subscription = subscription_get_for_user(
            user=authenticated_user(self.request), subscription_id=self.kwargs["pk"]
        )
        return protection_trips_for_subscription(subscription=subscription)

    @extend_schema(
        tags=TAGS,
        summary="When the subscription's protections tripped",
        description="Newest first: each entry a protection held back (the reason is on the "
        "trade too) and each pause of the maximum drawdown, with the figures compared.",
        responses={200: ProtectionTripSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


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


def _equity_request(request: Request, pk: int) -> tuple[StrategySubscription, dict[str, Any]]:
    """The caller's subscription (404 for anyone else's) and the checked query (400)."""
    subscription = subscription_get_for_user(user=authenticated_user(request), subscription_id=pk)
    query = EquityQuerySerializer(data=query_data(request))
    query.is_valid(raise_exception=True)
    return subscription, dict(query.validated_data)


def _series(subscription: StrategySubscription, query: dict[str, Any]) -> list:
    resolution = query.get("resolution")
    step: timedelta | None = resolution_to_timedelta(resolution) if resolution else None
    return equity_series(
        subscription=subscription, start=query.get("start"), end=query.get("end"), resolution=step
    )


class SubscriptionEquityView(APIView):
    @extend_schema(
        tags=["subscriptions"],
        summary="A subscription's equity over time",
        description="The stored curve (capital in force + realized + unrealized PnL, net of "
        "fees), oldest first. A point is stored at each fill, at each candle close that "
        "changed the equity, once a day, and at each capital, risk or leverage change "
        "(`capital_change`); `resolution` keeps the last point of each bucket.",
        parameters=[EquityQuerySerializer],
        responses={200: EquitySeriesSerializer, **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        subscription, query = _equity_request(request, pk)
        body = {
            "subscription_id": subscription.pk,
            "currency": subscription_currency(subscription=subscription),
            "resolution": query.get("resolution"),
            "points": _series(subscription, query),
        }
        return Response(EquitySeriesSerializer(body).data)


class _EquityChartView(APIView):
    fmt: ImageFormat = "png"
    content_type = "image/png"
    renderer_classes = [JSONRenderer]  # for errors: the image is an HttpResponse of its own
    content_negotiation_class = FilesAsTheyAre  # an <img> asks for image/*: it gets the image

    def get(self, request: Request, pk: int) -> HttpResponse:
        subscription, query = _equity_request(request, pk)
        image = equity_chart(
            points=_series(subscription, query),
            currency=subscription_currency(subscription=subscription),
            title=f"{subscription.strategy.name}: subscription {subscription.pk}",
            fmt=self.fmt,
        )
        return HttpResponse(image, content_type=self.content_type)


def _chart_schema(media: str) -> Any:
    return extend_schema(
        tags=["subscriptions"],
        summary=f"A subscription's equity curve and drawdown, as {media}",
        parameters=[EquityQuerySerializer],
        responses={
            (200, media): OpenApiResponse(OpenApiTypes.BINARY),
            **error_responses(400, 401, 404),
        },
    )


class SubscriptionEquityPngView(_EquityChartView):
    fmt, content_type = "png", "image/png"

    @_chart_schema("image/png")
    def get(self, request: Request, pk: int) -> HttpResponse:
        return super().get(request, pk)


class SubscriptionEquitySvgView(_EquityChartView):
    fmt, content_type = "svg", "image/svg+xml"

    @_chart_schema("image/svg+xml")
    def get(self, request: Request, pk: int) -> HttpResponse:
        return super().get(request, pk)
