"""A strategy's track record over the API, and the strategy listing ordered by it.

The listing lives here, a layer above strategies, because it orders and filters by the
record's figures (strategies cannot read backtests); it keeps the URL and every filter of
``strategies.views.StrategyListView``.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import F, QuerySet
from django.http import HttpResponse
from django_filters.constants import EMPTY_VALUES
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backtests.charts import backtest_chart
from backtests.record import record_chart_series, strategy_performance
from backtests.record_serializers import StrategyWithRecordSerializer
from core.api import FilesAsTheyAre, authenticated_user, error_responses, query_data
from core.time_utils import CANONICAL_RESOLUTIONS, resolution_to_timedelta
from strategies.filters import StrategyFilter
from strategies.models import Strategy
from strategies.selectors import strategy_get_visible
from strategies.views import TAGS, StrategyListView

CHART_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


class NullsLastOrderingFilter(django_filters.OrderingFilter):
    """Strategies without a record yet (no figure) come last, in either direction."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in EMPTY_VALUES:
            return qs
        ordering = [self.get_ordering_value(param) for param in value]
        return qs.order_by(*[_nulls_last(field) for field in ordering], "id")


def _nulls_last(field: str) -> Any:
    if field.startswith("-"):
        return F(field[1:]).desc(nulls_last=True)
    return F(field).asc(nulls_last=True)


class StrategyListingFilter(StrategyFilter):
    ordering = NullsLastOrderingFilter(
        fields=(
            ("created_at", "created_at"),
            ("name", "name"),
            ("subscriber_count", "subscriber_count"),
            ("id", "id"),
            ("record__return_7d_pct", "return_7d"),
            ("record__return_30d_pct", "return_30d"),
            ("record__return_90d_pct", "return_90d"),
            ("record__return_total_pct", "return_total"),
            ("record__max_drawdown_pct", "max_drawdown_pct"),
            ("record__sharpe", "sharpe"),
            ("record__win_rate_pct", "win_rate_pct"),
            ("subscriber_count", "subscribers"),
        )
    )
    max_drawdown_lte = django_filters.NumberFilter(
        field_name="record__max_drawdown_pct",
        lookup_expr="lte",
        label="Record's max drawdown at most this many percent.",
    )
    return_30d_gte = django_filters.NumberFilter(
        field_name="record__return_30d_pct",
        lookup_expr="gte",
        label="Record's 30-day return at least this many percent.",
    )
    sharpe_gte = django_filters.NumberFilter(
        field_name="record__sharpe", lookup_expr="gte", label="Record's Sharpe at least this."
    )

    class Meta(StrategyFilter.Meta):
        pass


class StrategyListingView(StrategyListView):
    serializer_class = StrategyWithRecordSerializer
    filterset_class = StrategyListingFilter

    def get_queryset(self) -> QuerySet[Strategy]:
        return super().get_queryset().select_related("record")

    @extend_schema(
        tags=TAGS,
        summary="Your strategies and everyone's public ones, with their track record",
        description=(
            "Each row carries `performance`: the figures of the strategy's track record (a "
            "reference paper account with a capital of 1, see `/performance`), null before its "
            "first real-time close. `is_marketplace=true` lists the marketplace; order it with "
            "`ordering=-return_30d` (also `return_7d`, `return_90d`, `return_total`, "
            "`max_drawdown_pct`, `sharpe`, `win_rate_pct`, `subscribers`) and filter it with "
            "`max_drawdown_lte`, `return_30d_gte`, `sharpe_gte` (percent). Strategies without "
            "a record come last."
        ),
        responses={200: StrategyWithRecordSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class PerformanceQuerySerializer(serializers.Serializer):
    resolution = serializers.ChoiceField(choices=list(CANONICAL_RESOLUTIONS), required=False)


def _resolution(request: Request, strategy: Strategy) -> str:
    query = PerformanceQuerySerializer(data=query_data(request))
    query.is_valid(raise_exception=True)
    resolution = query.validated_data.get("resolution", strategy.resolution)
    if resolution_to_timedelta(resolution) < resolution_to_timedelta(strategy.resolution):
        raise ValidationError(
            {"resolution": [f"At least the strategy's resolution ({strategy.resolution})."]}
        )
    return resolution


class StrategyPerformanceView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="A strategy's track record",
        description=(
            "The reference account (unit capital, risk 0.01, leverage 1, the paper costs) "
            "that follows every real-time signal of the strategy: returns over 7/30/90 days "
            "and since start, max drawdown, Sharpe, win rate, trades, subscribers, the equity "
            "series (`?resolution=` downsamples it), and the realized figures of live and "
            "paper subscribers in return terms. Backtests are never mixed in. See docs/api.md."
        ),
        parameters=[PerformanceQuerySerializer],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        resolution = _resolution(request, strategy)
        return Response(strategy_performance(strategy=strategy, resolution=resolution))


# Images, documented in docs/api.md ("Performance") beside the record they draw.
@extend_schema(exclude=True)
class StrategyPerformanceChartView(APIView):
    renderer_classes = [JSONRenderer]  # for errors: the image is an HttpResponse of its own
    content_negotiation_class = FilesAsTheyAre

    def get(self, request: Request, pk: int, fmt: str) -> HttpResponse:
        strategy = strategy_get_visible(user=authenticated_user(request), strategy_id=pk)
        series = record_chart_series(strategy=strategy)
        title = f"{strategy.name}: track record ({strategy.symbol} {strategy.resolution})"
        chart = backtest_chart(series=series, fmt=fmt, title=title)
        return HttpResponse(chart, content_type=CHART_TYPES[fmt])
