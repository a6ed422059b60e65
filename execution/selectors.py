"""Reads for the operator overview: the platform's last hour and day at a glance.

Every figure is one aggregate query (or one Redis round trip), whatever the number of
tenants, strategies or rows: the page is safe to open on a busy deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q, QuerySet

from core.clock import market_now
from core.redis_client import get_redis
from core.time_utils import resolution_to_timedelta
from execution.streaming.services import ALIVE_KEY, market_parse
from markets.exchange_data import PAPER_EXCHANGE
from markets.models import Candle
from markets.registry import registry_market_keys
from strategies.models import StrategyExecution
from subscriptions.models import StrategySubscription
from trades.models import Order

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class StatusCount:
    status: str
    hour: int
    day: int


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    count: int


@dataclass(frozen=True)
class MarketStream:
    exchange: str
    symbol: str
    resolution: str
    strategies: int
    last_close: datetime | None  # close time of the newest candle stored
    late: bool  # streamed, and no close stored for over two intervals

    @property
    def streamed(self) -> bool:
        return self.exchange != PAPER_EXCHANGE  # paper markets only have imported candles


@dataclass(frozen=True)
class Overview:
    now: datetime
    executions: list[StatusCount]
    failed_executions: list[StrategyExecution]
    orders: list[StatusCount]
    rejected_orders: list[Order]
    paused_reasons: list[ReasonCount]
    paused_subscriptions: list[StrategySubscription]
    streamer_id: str | None  # the live candle streamer's heartbeat, None when it is down
    markets: list[MarketStream]

    @property
    def failures_hour(self) -> int:
        return sum(c.hour for c in self.executions if c.status == StrategyExecution.Status.FAILED)

    @property
    def failures_day(self) -> int:
        return sum(c.day for c in self.executions if c.status == StrategyExecution.Status.FAILED)

    @property
    def paused_total(self) -> int:
        return sum(r.count for r in self.paused_reasons)


def operator_overview(*, now: datetime, limit: int = 20) -> Overview:
    return Overview(
        now=now,
        executions=executions_by_status(now=now),
        failed_executions=list(executions_failed_recent(now=now)[:limit]),
        orders=orders_by_status(now=now),
        rejected_orders=list(orders_rejected_recent()[:limit]),
        paused_reasons=subscriptions_paused_reasons(limit=limit),
        paused_subscriptions=list(subscriptions_paused_recent()[:limit]),
        streamer_id=streamer_current(),
        markets=markets_streamed(now=market_now()),  # the replay clock's time during a replay
    )


def executions_by_status(*, now: datetime) -> list[StatusCount]:
    """Executions started in the last hour and day, by status."""
    rows = _counts_by_status(StrategyExecution.objects, "started_at", now=now)
    return _in_order(rows, StrategyExecution.Status.values)


def executions_failed_recent(*, now: datetime) -> QuerySet[StrategyExecution]:
    return (
        StrategyExecution.objects.filter(
            status=StrategyExecution.Status.FAILED, started_at__gte=now - DAY
        )
        .select_related("strategy")
        .defer("logs", "strategy__code")
        .order_by("-started_at", "-pk")
    )


def orders_by_status(*, now: datetime) -> list[StatusCount]:
    """Orders written in the last hour and day, by status."""
    rows = _counts_by_status(Order.objects, "created_at", now=now)
    return _in_order(rows, Order.Status.values)


def orders_rejected_recent() -> QuerySet[Order]:
    return (
        Order.objects.filter(status=Order.Status.REJECTED)
        .select_related("subscription__user")
        .order_by("-created_at", "-pk")
    )


def subscriptions_paused_reasons(*, limit: int) -> list[ReasonCount]:
    """Why subscriptions are paused, the most common reason first."""
    rows = (
        StrategySubscription.objects.filter(status=StrategySubscription.Status.PAUSED)
        .values("status_reason")
        .annotate(count=Count("pk"))
        .order_by("-count", "status_reason")[:limit]
    )
    return [ReasonCount(row["status_reason"] or "(no reason given)", row["count"]) for row in rows]


def subscriptions_paused_recent() -> QuerySet[StrategySubscription]:
    return (
        StrategySubscription.objects.filter(status=StrategySubscription.Status.PAUSED)
        .select_related("user", "strategy")
        .defer("strategy__code")
        .order_by("-updated_at", "-pk")
    )


def streamer_current() -> str | None:
    """The id of the candle streamer whose heartbeat is fresh, if any."""
    value = get_redis().get(ALIVE_KEY)
    return None if value is None else str(value)


def markets_streamed(*, now: datetime) -> list[MarketStream]:
    """Every market in the strategy registry, its strategies and its newest stored candle
    (late when a streamed market has stored no close for two intervals)."""
    client = get_redis()
    keys = sorted(registry_market_keys())
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.scard(key)
    sizes = pipe.execute()
    markets = [market_parse(key) for key in keys]
    last = _last_candles(markets)
    return [
        MarketStream(
            *market,
            strategies=int(size),
            last_close=last.get(market),
            late=_late(market, last.get(market), now=now),
        )
        for market, size in zip(markets, sizes, strict=True)
    ]


def _late(market: tuple[str, str, str], last_close: datetime | None, *, now: datetime) -> bool:
    exchange, _, resolution = market
    if exchange == PAPER_EXCHANGE:
        return False
    return last_close is None or now - last_close > 2 * resolution_to_timedelta(resolution)


def _last_candles(markets: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], datetime]:
    if not markets:
        return {}
    wanted = Q()
    for exchange, symbol, resolution in markets:
        wanted |= Q(exchange=exchange, symbol=symbol, resolution=resolution)
    rows = (
        Candle.objects.filter(wanted)
        .values("exchange", "symbol", "resolution")
        .annotate(last=Max("open_time"))
    )
    return {
        (row["exchange"], row["symbol"], row["resolution"]): row["last"]
        + resolution_to_timedelta(row["resolution"])
        for row in rows
    }


def _counts_by_status(manager: object, field: str, *, now: datetime) -> dict[str, StatusCount]:
    rows = (
        manager.filter(**{f"{field}__gte": now - DAY})  # type: ignore[attr-defined]
        .values("status")
        .annotate(day=Count("pk"), hour=Count("pk", filter=Q(**{f"{field}__gte": now - HOUR})))
    )
    return {row["status"]: StatusCount(row["status"], row["hour"], row["day"]) for row in rows}


def _in_order(rows: dict[str, StatusCount], statuses: list[str]) -> list[StatusCount]:
    """Every status, in the model's order, zeros included: a quiet hour reads as zeros."""
    return [rows.get(status, StatusCount(status, 0, 0)) for status in statuses]
