"""Backtest endpoints: thin views over backtests.selectors and backtests.services.

A backtest runs on a worker of its own queue (``BACKTEST_QUEUE``): the request records it and
answers 202 at once; the client polls it until it is done.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from backtests.charts import backtest_chart
from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.selectors import (
    backtest_get_owned,
    backtest_list_owned,
    backtest_report,
    backtest_series,
)
from backtests.serializers import (
    BacktestCreateSerializer,
    BacktestDetailSerializer,
    BacktestSerializer,
)
from backtests.services import Costs, Period, Subject, backtest_create
from backtests.tasks import backtest_execute
from backtests.throttles import BACKTESTS, BacktestThrottle
from core.api import Conflict, FilesAsTheyAre, authenticated_user, error_responses
from strategies.models import Strategy
from strategies.selectors import strategy_get_visible

TAGS = ["backtests"]
Status = Backtest.Status
CREATE_EXAMPLES = [
    OpenApiExample(
        "A strategy",
        request_only=True,
        value={
            "strategy": 1,
            "start": "2018-01-10T00:00:00Z",
            "end": "2018-01-20T00:00:00Z",
            "capital": "1",
            "risk_per_trade": "0.01",
        },
    ),
    OpenApiExample(
        "Code on a market",
        request_only=True,
        value={
            "code": "LOOKBACK = 20\n\ndef generate_signal(candles, settings):\n    return None\n",
            "exchange": "binance",
            "symbol": "ETH/BTC",
            "resolution": "5m",
            "settings": {"fast": 5},
            "fee_bps": "7.5",
            "slippage_bps": "2",
            "method": "per_candle",
        },
    ),
]
NOT_READY = "Backtest #{id} is {status}: its {what} exists once it is done."
FAILED = "Backtest #{id} failed, so it has no {what} (its error says why)."
# Files drawn from user input (names, reasons, metadata): nothing in them may run or fetch.
FILE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
RESULT_FIELDS = ("metrics", "series", "skips", "gaps", "lookahead", "logs")
FLAGS = {"true": True, "false": False, "1": True, "0": False}


class BacktestListView(generics.ListAPIView):
    serializer_class = BacktestSerializer
    throttle_scope = BACKTESTS

    def get_throttles(self) -> list[BaseThrottle]:
        # Only requesting a backtest costs a worker's time; reading the list is free.
        return [BacktestThrottle()] if self.request.method == "POST" else []

    def get_queryset(self) -> QuerySet[Backtest]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Backtest.objects.none()
        # A list shows no results: the series alone can be megabytes a backtest.
        owned = backtest_list_owned(user=authenticated_user(self.request))
        return owned.defer(*RESULT_FIELDS)

    @extend_schema(
        tags=TAGS,
        summary="Your backtests, newest first",
        responses={200: BacktestSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Backtest a strategy over stored candles",
        description=(
            "Either `strategy` (yours or a public one, with its code and settings as they are "
            "now) or `code` with `exchange`, `symbol`, `resolution` and optional `settings`. "
            "The period is cut to the stored candles and to candle boundaries. The backtest "
            "is recorded `queued` and run by a backtest worker: the answer is `202` with a "
            "`Location` to poll until `status` is `done` (or `failed`, with `error`). A "
            "strategy you may not see is `400` on `strategy`, like one that does not exist. "
            "429 beyond the per-user rate of backtests."
        ),
        request=BacktestCreateSerializer,
        examples=CREATE_EXAMPLES,
        responses={202: BacktestSerializer, **error_responses(400, 401, 429)},
    )
    def post(self, request: Request) -> Response:
        data = BacktestCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        backtest = _create_and_queue(authenticated_user(request), dict(data.validated_data))
        location = request.build_absolute_uri(reverse("backtest-detail", args=[backtest.pk]))
        return Response(
            BacktestSerializer(backtest).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )


def _create_and_queue(user: User, fields: dict[str, Any]) -> Backtest:
    with transaction.atomic():
        backtest = backtest_create(
            owner=user,
            subject=_subject(user, fields),
            period=Period(start=fields.get("start"), end=fields.get("end")),
            sizing=Sizing(fields["capital"], fields["risk_per_trade"], fields["leverage"]),
            costs=Costs(fee_bps=fields.get("fee_bps"), slippage_bps=fields.get("slippage_bps")),
            method=fields["method"],
        )
        backtest_id = backtest.pk
        # After the commit, so the worker always finds the row it is sent.
        transaction.on_commit(
            lambda: backtest_execute.apply_async(args=[backtest_id], queue=settings.BACKTEST_QUEUE)
        )
    return backtest


def _subject(user: User, fields: dict[str, Any]) -> Subject:
    if "strategy" in fields:
        return Subject(strategy=_visible_strategy(user, fields["strategy"]))
    return Subject(
        code=fields["code"],
        settings=fields.get("settings", {}),
        exchange=fields["exchange"],
        symbol=fields["symbol"],
        resolution=fields["resolution"],
    )


def _visible_strategy(user: User, strategy_id: int) -> Strategy:
    """A strategy the user may see; any other is as unknown as a missing one (no 404 leak)."""
    try:
        return strategy_get_visible(user=user, strategy_id=strategy_id)
    except Http404:
        raise ValidationError({"strategy": "unknown strategy"}) from None


class BacktestDetailView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="One of your backtests: its progress, then its result",
        description=(
            "`progress` goes from 0 to 1 while it runs; once `status` is `done`, `result` "
            "holds the metrics, the trades, the gaps in the data, the skipped signals, the "
            "look-ahead check (vectorised) and the equity at each close (left out with "
            "`?series=false`). Money is in `currency`, as strings."
        ),
        parameters=[
            OpenApiParameter(
                "series",
                OpenApiTypes.BOOL,
                description="`false` leaves the equity series out (default `true`).",
            )
        ],
        responses={200: BacktestDetailSerializer, **error_responses(400, 401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        backtest = backtest_get_owned(user=authenticated_user(request), backtest_id=pk)
        context = {"request": request, "series": _flag(request, "series", default=True)}
        return Response(BacktestDetailSerializer(backtest, context=context).data)


def _flag(request: Request, name: str, *, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() not in FLAGS:
        raise exceptions.ValidationError({name: ["Must be true or false."]})
    return FLAGS[raw.lower()]


# --- files ---------------------------------------------------------------------------------
class BacktestFileView(APIView):
    """A figure or report of a finished backtest of the caller's (404 for anyone else's)."""

    renderer_classes = [JSONRenderer]  # for errors: the files are HttpResponses of their own
    content_negotiation_class = FilesAsTheyAre
    what = ""
    content_type = ""

    def get(self, request: Request, pk: int) -> HttpResponse:
        backtest = backtest_get_owned(user=authenticated_user(request), backtest_id=pk)
        _check_done(backtest, self.what)
        response = HttpResponse(self.render(backtest), content_type=self.content_type)
        response["Content-Disposition"] = f'inline; filename="{self.filename(backtest)}"'
        response["Content-Security-Policy"] = FILE_POLICY
        return response

    def render(self, backtest: Backtest) -> bytes | str:
        raise NotImplementedError

    def filename(self, backtest: Backtest) -> str:
        raise NotImplementedError


def _check_done(backtest: Backtest, what: str) -> None:
    if backtest.status == Status.FAILED:
        raise Conflict(FAILED.format(id=backtest.pk, what=what))
    if backtest.status != Status.DONE:
        raise Conflict(NOT_READY.format(id=backtest.pk, status=backtest.status, what=what))


def _file_schema(summary: str, media_type: str, description: str) -> Any:
    return extend_schema(
        tags=TAGS,
        summary=summary,
        description=f"{description} `409` until the backtest is done (and for a failed one).",
        responses={
            (200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=summary),
            **error_responses(401, 404, 409),
        },
    )


class BacktestChartView(BacktestFileView):
    what = "chart"
    fmt = "png"

    def render(self, backtest: Backtest) -> bytes:
        return backtest_chart(series=backtest_series(backtest=backtest), fmt=self.fmt)

    def filename(self, backtest: Backtest) -> str:
        return f"backtest-{backtest.pk}.{self.fmt}"


class BacktestChartPngView(BacktestChartView):
    content_type = "image/png"

    @_file_schema("The equity chart, as PNG", "image/png", "Equity and price over the period.")
    def get(self, request: Request, pk: int) -> HttpResponse:
        return super().get(request, pk)


class BacktestChartSvgView(BacktestChartView):
    fmt = "svg"
    content_type = "image/svg+xml"

    @_file_schema("The equity chart, as SVG", "image/svg+xml", "Equity and price over the period.")
    def get(self, request: Request, pk: int) -> HttpResponse:
        return super().get(request, pk)


class BacktestReportView(BacktestFileView):
    what = "report"
    content_type = "text/html; charset=utf-8"

    def render(self, backtest: Backtest) -> str:
        return backtest_report(backtest=backtest)

    def filename(self, backtest: Backtest) -> str:
        return f"backtest-{backtest.pk}.html"

    @_file_schema(
        "The report, as one HTML page",
        "text/html",
        "What was tested and how, the metrics, the chart and the trades; self-contained.",
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        return super().get(request, pk)
