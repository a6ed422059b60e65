"""The follower's protections on paper, through the fan-out and the candle-close step.

Executions are written as the pipeline records them and their signals fanned out in process;
the live checks (the slippage cap against the exchange, a maximum drawdown closing a live
position) are in test_live_protections.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Notification, NotificationEvent
from strategies.models import StrategyExecution
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create, subscription_update_settings
from tests.api.helpers import client_for, make_credential, make_trade
from tests.factories import StrategyFactory, UserFactory, subscribe
from trades.models import Order, Position, ProtectionTrip, Trade
from trades.services import fanout_process, trades_check_stops

pytestmark = pytest.mark.django_db

# Signals at 10:00 UTC tomorrow: "today" for the daily loss is that day, well clear of midnight.
T0 = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) + timedelta(days=1)
STEP = timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _paper(settings):
    # A known fee and slippage, so every figure below can be checked by hand.
    settings.PAPER_FEE_BPS = Decimal("10")
    settings.PAPER_SLIPPAGE_BPS = Decimal("5")
    settings.SIGNAL_MAX_AGE_S = 10**9


def _execution(strategy, i: int, close: str, signal: str = "HOLD") -> StrategyExecution:
    start = T0 + STEP * (i - 1)
    return StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=start,
        interval_end=start + STEP,
        status=StrategyExecution.Status.SUCCESS,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        signal={"signal": signal, "price": float(close)},
        close_price=Decimal(close),
    )


def _signal(strategy, i: int, close: str, signal: str, subs) -> StrategyExecution:
    execution = _execution(strategy, i, close, signal)
    fanout_process(execution_id=execution.pk, subscription_ids=[s.pk for s in subs])
    return execution


def _close(strategy, i: int, close: str) -> StrategyExecution:
    """A candle close without a signal: the holders are valued at the close."""
    execution = _execution(strategy, i, close)
    price = Decimal(close)
    trades_check_stops(execution=execution, open_price=price, high=price, low=price)
    return execution


def _guarded(strategy, **protections: Any) -> StrategySubscription:
    return subscription_create(
        user=UserFactory(),
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.01"),
        protections=protections,
    )


def _closed(sub, pnl: str, ago: timedelta, reason: str = "exit signal") -> None:
    make_trade(sub, pnl=pnl, exit_time=T0 - ago, metadata={"exit_reason": reason})


def _open_elsewhere(sub: StrategySubscription, *, mode: str) -> None:
    """An open trade of the same user on another strategy, paper or live."""
    other = StrategyFactory()
    if mode == "live":
        credential = make_credential(sub.user, label=f"k{other.pk}")
        elsewhere = subscription_create(
            user=sub.user,
            strategy=other,
            capital=Decimal("1"),
            risk_per_trade=Decimal("0.01"),
            mode="live",
            credential=credential,
        )
    else:
        elsewhere = subscribe(other, user=sub.user)
    make_trade(elsewhere, status="open", pnl=None)


History = Callable[[StrategySubscription], None]


def _nothing(sub: StrategySubscription) -> None:
    return None


# The protection, its settings, the history that trips it, one just short of it, what the
# reason says, and the figures the trip records. Capital 1000, risk 0.01: the entry is 200 at
# 0.05 (10 BTC).
CASES = [
    pytest.param(
        "daily_loss_limit",
        {"daily_loss_limit_pct": Decimal("1")},
        lambda s: _closed(s, "-15", timedelta(hours=2)),
        lambda s: (_closed(s, "-15", timedelta(days=1)), _closed(s, "-5", timedelta(hours=1))),
        "daily loss limit: 15.00000000 lost today (UTC), the limit is 1% of the capital",
        {"lost_today": "15.00000000", "limit": "10.00000000"},
        id="daily_loss_limit",
    ),
    pytest.param(
        "cooldown",
        {"cooldown_after_losses": 2, "cooldown_minutes": 60},
        # a loss, then a stop-out (in profit, still a stop-out) half an hour before the signal
        lambda s: (
            _closed(s, "-3", timedelta(hours=3)),
            _closed(s, "0.5", timedelta(minutes=30), "stop loss"),
        ),
        lambda s: (
            _closed(s, "-3", timedelta(hours=3)),
            _closed(s, "4", timedelta(hours=2)),
            _closed(s, "-3", timedelta(minutes=30)),
        ),
        "cooldown: 2 losing trades or stop-outs in a row; no entries until",
        {"losses_in_a_row": "2", "until": (T0 + timedelta(minutes=30)).isoformat()},
        id="cooldown",
    ),
    pytest.param(
        "max_open_trades",
        {"max_open_trades": 1},
        lambda s: _open_elsewhere(s, mode="paper"),
        lambda s: _open_elsewhere(s, mode="live"),  # other mode: not counted
        "max open trades: 1 open across your paper subscriptions (max 1)",
        {"open_trades": "1", "max_open_trades": "1"},
        id="max_open_trades",
    ),
    pytest.param(
        "max_order_notional",
        {"max_order_notional": Decimal("9.99")},
        _nothing,
        _nothing,
        "max notional per order: this entry is worth 10.00000000, above your maximum of 9.99",
        {"notional": "10.00000000", "max_order_notional": "9.99000000"},
        id="max_order_notional",
    ),
    pytest.param(
        "slippage_cap",
        {"slippage_cap_bps": 4},  # the paper fill is 5 bps worse than the close
        _nothing,
        _nothing,
        "slippage cap: the paper fill at 0.050025 is 5.0 bps worse than the signal's price "
        "0.05 (cap 4 bps)",
        {"signal_price": "0.050000000000", "slippage_bps": "5.0", "cap_bps": "4"},
        id="slippage_cap",
    ),
]


@pytest.mark.parametrize(
    ("protection", "protections", "trips", "holds", "reason", "figures"), CASES
)
def test_each_entry_protection_skips_with_its_reason_records_and_notifies_the_trip(
    protection, protections, trips, holds, reason, figures
):
    # given two followers with the same protection: one whose history trips it, one not
    # (the max notional and slippage cases: the same protection set just within the order)
    strategy = StrategyFactory()
    tripped, fine = _guarded(strategy, **protections), _guarded(strategy, **protections)
    if protections.get("max_order_notional"):
        subscription_update_settings(
            subscription=fine, protections={"max_order_notional": Decimal("10")}
        )
    if protections.get("slippage_cap_bps"):
        subscription_update_settings(subscription=fine, protections={"slippage_cap_bps": 5})
    trips(tripped)
    holds(fine)

    # when a LONG fans out to both, and its batch is delivered a second time
    entry = _signal(strategy, 1, "0.05", "LONG", [tripped, fine])
    fanout_process(execution_id=entry.pk, subscription_ids=[tripped.pk, fine.pk])

    # then the tripped one's entry is skipped with the protection's reason, nothing was sent
    skipped = Trade.objects.get(execution=entry, subscription=tripped)
    assert skipped.status == "skipped" and skipped.error.startswith(reason), skipped.error
    assert not Order.objects.filter(trade=skipped).exists()
    # and the trip is recorded once, with its figures, and its follower told once
    trip = ProtectionTrip.objects.get(subscription=tripped)
    assert (trip.protection, trip.action, trip.trade_id) == (
        protection,
        "entry_skipped",
        skipped.pk,
    )
    assert trip.reason == skipped.error and figures.items() <= trip.figures.items()
    notice = Notification.objects.get(
        user=tripped.user, event=NotificationEvent.PROTECTION_TRIGGERED
    )
    assert notice.event == "protection.triggered"
    assert notice.key == f"protection.triggered:trade:{skipped.pk}"
    assert notice.payload["protection"] == trip.protection
    assert notice.payload["reason"] == trip.reason
    assert notice.payload["subscription_id"] == tripped.pk
    # and the other one entered as usual, at the paper fill
    entered = Trade.objects.get(execution=entry, subscription=fine)
    assert entered.status == "open" and entered.quantity == Decimal("200")
    assert entered.entry_price == Decimal("0.050025")
    assert not ProtectionTrip.objects.filter(subscription=fine).exists()


def test_a_batch_reads_each_protection_once_whatever_its_size():
    # given batches of 2 and of 6 followers with every protection set, none tripping
    def batch(size: int) -> tuple[StrategySubscription, list[StrategySubscription]]:
        strategy = StrategyFactory()
        subs = [
            _guarded(
                strategy,
                max_drawdown_pct=Decimal("50"),
                daily_loss_limit_pct=Decimal("50"),
                max_order_notional=Decimal("100"),
                max_open_trades=5,
                cooldown_after_losses=3,
                cooldown_minutes=60,
                slippage_cap_bps=50,
            )
            for _ in range(size)
        ]
        for sub in subs:
            _closed(sub, "-1", timedelta(hours=1))
        return strategy, subs

    queries = []
    for size in (2, 6):
        strategy, subs = batch(size)
        execution = _execution(strategy, size, "0.05", "LONG")
        # when the entry fans out
        with CaptureQueriesContext(connection) as captured:
            fanout_process(execution_id=execution.pk, subscription_ids=[s.pk for s in subs])
        queries.append(len(captured))
        assert Trade.objects.filter(execution=execution, status="open").count() == size

    # then three times the followers cost not one query more
    assert queries[0] == queries[1], queries


def test_max_drawdown_from_the_peak_pauses_records_notifies_and_closes_if_asked():
    # given three holders of 500 of notional on 1000 (risk 0.1, leverage 5): two with a 5 %
    # maximum drawdown (one asking for its position to be closed), one without
    strategy = StrategyFactory()

    def holder(**protections: Any) -> StrategySubscription:
        return subscription_create(
            user=UserFactory(),
            strategy=strategy,
            capital=Decimal("1000"),
            risk_per_trade=Decimal("0.1"),
            leverage=Decimal("5"),
            protections=protections,
        )

    closing = holder(max_drawdown_pct=Decimal("5"), close_on_max_drawdown=True)
    pausing = holder(max_drawdown_pct=Decimal("5"))
    unguarded = holder()
    # and one whose 0.04 % is less than its entry's fee (0.5 on 1000): its fill trips it
    at_fill = holder(max_drawdown_pct=Decimal("0.04"), close_on_max_drawdown=True)
    subs = [closing, pausing, unguarded]
    _signal(strategy, 1, "0.05", "LONG", [*subs, at_fill])

    # then the last one is paused by its entry's fill and closed in the same fan-out
    at_fill.refresh_from_db()
    assert at_fill.status == "paused" and at_fill.status_reason.startswith("max drawdown 0.1%")
    first = Trade.objects.get(subscription=at_fill)
    assert first.status == "closed" and first.metadata["exit_reason"] == "max drawdown"
    assert first.exit_time == first.entry_time  # dated at the fill that tripped it

    # when the market rises 20 % (a new peak) and falls back 10 %: still a gain on the
    # capital, but 60 lost from a peak of about 1099 (5.5 %)
    _close(strategy, 2, "0.06")
    fall = _close(strategy, 3, "0.054")

    # then both guarded subscriptions are paused with the figures in the reason
    closing.refresh_from_db()
    pausing.refresh_from_db()
    for sub in (closing, pausing):
        assert sub.status == "paused"
        assert sub.status_reason.startswith(
            "max drawdown 5.5% ≥ 5%: equity 1039.24975000 from a peak of 1099.24975000"
        )
        assert sub.equity_peak is not None and sub.equity_peak > 1000
    # and the trips are recorded with what they did, and notified
    trip = ProtectionTrip.objects.get(subscription=closing)
    assert (trip.protection, trip.action, trip.trade_id) == (
        "max_drawdown",
        "paused_and_closed",
        None,
    )
    assert trip.figures["limit_pct"] == "5.00" and trip.figures["close_positions"] == "true"
    assert trip.figures["drawdown_pct"] == "5.46"
    assert ProtectionTrip.objects.get(subscription=pausing).action == "paused"
    assert (
        Notification.objects.get(
            user=closing.user, event=NotificationEvent.PROTECTION_TRIGGERED
        ).payload["protection"]
        == "max_drawdown"
    )
    # and the one that asked is closed at the close, under its own close intent, flat
    closed = Trade.objects.get(subscription=closing)
    assert closed.status == "closed" and closed.metadata["exit_reason"] == "max drawdown"
    assert closed.exit_execution_id == closed.execution_id  # a close's claim: its own entry
    order = Order.objects.get(trade=closed, purpose=f"close:{closed.pk}")
    assert order.client_order_id == f"sf-{closed.execution_id}-{closing.pk}-c{closed.pk}"
    assert order.execution_id == closed.execution_id and order.status == "filled"
    assert closed.exit_price == Decimal("0.054") * (1 - Decimal("0.0005"))
    assert Position.objects.get(subscription=closing).side == "flat"
    # the other keeps its position, and the unguarded one is untouched
    assert Trade.objects.get(subscription=pausing).status == "open"
    unguarded.refresh_from_db()
    assert unguarded.status == "active" and not ProtectionTrip.objects.filter(
        subscription=unguarded
    )

    # when the next close falls further and the strategy exits
    _close(strategy, 4, "0.05")
    exit_execution = _signal(strategy, 5, "0.05", "EXIT_LONG", subs)
    assert fall.close_price == Decimal("0.054")

    # then nothing trips twice, and the paused one's position is exited by the strategy
    assert ProtectionTrip.objects.filter(protection="max_drawdown").count() == 3
    held = Trade.objects.get(subscription=pausing)
    assert held.status == "closed" and held.exit_execution_id == exit_execution.pk


@pytest.mark.parametrize("close_positions", [True, False])
def test_a_subscription_resumed_after_its_max_drawdown_trades_again_from_its_equity_then(
    close_positions,
):
    # given a follower with a 5 % maximum drawdown, paused by it after a rise and a fall
    strategy = StrategyFactory()
    sub = subscription_create(
        user=UserFactory(),
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.1"),
        leverage=Decimal("5"),
        protections={
            "max_drawdown_pct": Decimal("5"),
            "close_on_max_drawdown": close_positions,
        },
    )
    _signal(strategy, 1, "0.05", "LONG", [sub])
    _close(strategy, 2, "0.06")
    _close(strategy, 3, "0.054")
    sub.refresh_from_db()
    assert sub.status == "paused" and sub.status_reason.startswith("max drawdown")
    if not close_positions:  # the follower exits the position by hand, at the same price
        _signal(strategy, 4, "0.054", "EXIT_LONG", [sub])
    assert not Trade.objects.filter(subscription=sub, status="open").exists()

    # when the follower resumes it, and the strategy enters again at the same price
    resumed = client_for(sub.user).post(f"/api/strategies/subscriptions/{sub.pk}/resume")
    assert resumed.status_code == 200, resumed.content
    entry = _signal(strategy, 5, "0.054", "LONG", [sub])

    # then it entered and keeps the position: the drawdown counts from the resume on, not
    # from the peak it was paused for (which would pause, and close, it at its first fill)
    sub.refresh_from_db()
    assert sub.status == "active", sub.status_reason
    assert Trade.objects.get(execution=entry, subscription=sub).status == "open"
    assert ProtectionTrip.objects.filter(subscription=sub).count() == 1
    assert sub.equity_peak is not None and sub.equity_peak < Decimal("1099")


def test_a_resume_within_the_max_drawdown_keeps_the_peak():
    # given a follower with a 10 % maximum drawdown, about 5.5 % below its peak, paused by hand
    strategy = StrategyFactory()
    sub = subscription_create(
        user=UserFactory(),
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.1"),
        leverage=Decimal("5"),
        protections={"max_drawdown_pct": Decimal("10")},
    )
    _signal(strategy, 1, "0.05", "LONG", [sub])
    _close(strategy, 2, "0.06")
    _close(strategy, 3, "0.054")
    sub.refresh_from_db()
    peak = sub.equity_peak
    assert sub.status == "active" and peak is not None and peak > Decimal("1099")
    api = client_for(sub.user)
    assert api.post(f"/api/strategies/subscriptions/{sub.pk}/pause").status_code == 200

    # when it is resumed
    assert api.post(f"/api/strategies/subscriptions/{sub.pk}/resume").status_code == 200

    # then its drawdown is still measured from the same peak: a pause never loosens the guard
    sub.refresh_from_db()
    assert sub.status == "active" and sub.equity_peak == peak
