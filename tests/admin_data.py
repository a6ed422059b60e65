"""A row of every model the admin shows, as the platform writes them (for the admin tests)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.authtoken.models import Token

from backtests.models import Backtest, StrategyRecord
from markets.schedule import schedule_sync
from notifications.models import Delivery, Notification
from notifications.services import notification_preference_set, webhook_create
from strategies.models import Strategy, StrategyExecution
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create
from tests.api.helpers import make_credential, make_execution, make_order, make_trade
from tests.factories import BacktestFactory, StrategyFactory, flat_candles, load_candles, subscribe
from trades.models import Order, Position, ProtectionTrip, Trade

FAILURE = (
    "exception: ZeroDivisionError: division by zero (line 7)\n"
    'Traceback (most recent call last):\n  File "strategy.py", line 7'
)


@dataclass
class AdminData:
    strategy: Strategy
    live: StrategySubscription
    paper: StrategySubscription
    trade: Trade
    order: Order
    failed: StrategyExecution


def admin_data_create(*, owner: Any) -> AdminData:
    strategy = StrategyFactory(owner=owner, settings={"fast": 5}, is_public=True)
    live = subscription_create(
        user=owner,
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=make_credential(owner),
    )
    paper = subscribe(strategy)
    trade, order = _trading(live, paper)
    failed = _executions(strategy)
    _followers(strategy, live, paper, trade)
    _notifications(owner)
    _the_rest(owner, strategy)
    return AdminData(strategy, live, paper, trade, order, failed)


def _trading(live: StrategySubscription, paper: StrategySubscription) -> tuple[Trade, Order]:
    trade = make_trade(paper, error="exchange said <no>", metadata={"note": "x"})
    trade.execution.logs = "line 1\nline 2"
    trade.execution.save(update_fields=["logs"])
    order = make_order(trade)
    make_trade(live, status="open", pnl=None)
    rejected = make_trade(live, status="open", pnl=None)
    make_order(
        rejected,
        status=Order.Status.REJECTED,
        filled=Decimal("0"),
        error='InsufficientFunds: binance {"code":-2010,"msg":"Account has insufficient <BTC>"}',
    )
    Position.objects.create(
        subscription=paper, symbol=trade.symbol, side="long", quantity=Decimal("2")
    )
    return trade, order


def _executions(strategy: Strategy) -> StrategyExecution:
    make_execution(
        strategy, trigger="manual", duration_ms=9.402000000000001, drift_ms=279737523955.11597
    )
    now = timezone.now()
    return make_execution(
        strategy,
        start=now - timedelta(minutes=10),
        started_at=now - timedelta(minutes=5),
        trigger="stream",
        status=StrategyExecution.Status.FAILED,
        error=FAILURE,
        signal=None,
    )


def _followers(
    strategy: Strategy, live: StrategySubscription, paper: StrategySubscription, trade: Trade
) -> None:
    reason = "maximum drawdown 12.3 % reached (limit 10 %)"
    StrategySubscription.objects.filter(pk=paper.pk).update(status="paused", status_reason=reason)
    ProtectionTrip.objects.create(
        subscription=paper,
        protection=ProtectionTrip.Protection.MAX_DRAWDOWN,
        action=ProtectionTrip.Action.PAUSED,
        reason=reason,
        figures={"drawdown_pct": "12.3", "limit_pct": "10"},
    )
    StrategyRecord.objects.create(
        strategy=strategy, return_30d_pct=Decimal("3.2146"), trades=4, started_at=trade.entry_time
    )
    load_candles(rows=flat_candles(start_ms=1515560100000, count=3))


def _notifications(owner: Any) -> None:
    notification = Notification.objects.create(
        user=owner, event="order.rejected", key="order.rejected:1", payload={"why": "<no>"}
    )
    webhook, _ = webhook_create(
        user=owner, url="https://example.com/hook", events=["order.rejected"]
    )
    Delivery.objects.create(
        webhook=webhook,
        notification=notification,
        status=Delivery.Status.FAILED,
        attempts=3,
        response_code=500,
        last_error="HTTP 500 from the receiver",
        attempt_log=[{"at": "2026-01-01T00:00:00Z", "response_code": 500}],
    )
    notification_preference_set(user=owner, email_events=["order.rejected"])


def _the_rest(owner: Any, strategy: Strategy) -> None:
    BacktestFactory(owner=owner, strategy=strategy)
    BacktestFactory(owner=owner, status=Backtest.Status.FAILED, error="no candles\nin the period")
    schedule_sync(active_resolutions={"5m"})  # the beat rows (periodic task, crontab)
    Token.objects.create(user=owner)
    Group.objects.get_or_create(name="operators")
