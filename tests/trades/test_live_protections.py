"""Protections and manual control of live positions, through unmodified ccxt against the
exchange simulator, in process (the fan-out inline, the close through the API)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.time_utils import datetime_to_ms
from execution.services import execution_run
from notifications.models import Notification, NotificationEvent
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create
from tests.api.helpers import client_for, make_credential, make_trade
from tests.factories import StrategyFactory, load_candles, subscribe
from tests.trades.conftest import START, STEP
from tests.trades.live import Sim, live_trader
from trades.models import Order, Position, ProtectionTrip, Trade

pytestmark = pytest.mark.django_db(transaction=True)


def _run(strategy, close: datetime) -> StrategyExecution:
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=close - STEP, trigger="replay", inline_fanout=True
    )
    return StrategyExecution.objects.get(pk=outcome.execution_id)


def _on_exchange(sim: Sim) -> dict[str, dict]:
    return {o["client_order_id"]: o for o in sim.orders()}


def test_slippage_cap_sends_limits_skips_past_the_cap_and_never_holds_an_exit(sim, market):
    # given three live followers: a cap of 200 bps, one of 50 bps, and none; and an exchange
    # whose market is already 88 bps above the signal's close (it trades at its newest
    # candle), within the platform's price band
    strategy = StrategyFactory(settings={"signal": "LONG"})
    wide = live_trader(sim, strategy, slippage_cap_bps=200)
    tight = live_trader(sim, strategy, slippage_cap_bps=50)
    plain = live_trader(sim, strategy)
    sim.clock(None)

    # when the entry fans out
    entry = _run(strategy, market[20])

    # then the tight one is skipped with the move in the reason, recorded as a trip
    assert entry.close_price is not None
    skipped = Trade.objects.get(execution=entry, subscription=tight.subscription)
    assert skipped.status == "skipped"
    assert entry.close_price == Decimal("0.051")  # the exchange is at 0.05145, 0.88 % above
    assert skipped.error == (
        "slippage cap: the market at 0.05145 is 88.2 bps worse than the signal's price 0.051 "
        "(cap 50 bps)"
    )
    trip = ProtectionTrip.objects.get(subscription=tight.subscription)
    assert (trip.protection, trip.trade_id) == ("slippage_cap", skipped.pk)
    assert (
        Notification.objects.filter(
            user=tight.subscription.user, event=NotificationEvent.PROTECTION_TRIGGERED
        ).count()
        == 1
    )
    # the wide one went out as a limit at 2 % above the close, and filled within it
    limit = (entry.close_price * Decimal("1.02")).quantize(Decimal("1e-8"))
    capped = Trade.objects.get(execution=entry, subscription=wide.subscription)
    order = Order.objects.get(trade=capped, purpose="entry")
    placed = _on_exchange(sim)[capped.client_order_id]
    assert (order.type, order.price) == ("limit", limit)
    assert (placed["type"], Decimal(placed["price"])) == ("LIMIT", limit)
    assert capped.status == "open" and capped.entry_price <= limit
    # the follower without a cap entered at market, and nothing was sent for the tight one
    market_entry = Trade.objects.get(execution=entry, subscription=plain.subscription)
    assert market_entry.status == "open"
    assert _on_exchange(sim)[market_entry.client_order_id]["type"] == "MARKET"
    assert skipped.client_order_id not in _on_exchange(sim)

    # when the strategy exits two candles later, the market still far from its close
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    _run(strategy, market[22])

    # then both positions are sold at market: a cap never holds an exit back
    for trade in (capped, market_entry):
        trade.refresh_from_db()
        assert trade.status == "closed"
        assert _on_exchange(sim)[trade.exit_client_order_id]["type"] == "MARKET"


History = Callable[[StrategySubscription, datetime], Any]


def _closed(sub: StrategySubscription, pnl: str, at: datetime, reason: str = "exit signal"):
    return make_trade(sub, pnl=pnl, exit_time=at, metadata={"exit_reason": reason})


def _open_elsewhere(sub: StrategySubscription, *, mode: str) -> None:
    """An open trade of the same user on another strategy, live or paper."""
    other = StrategyFactory()
    if mode == "live":
        elsewhere = subscription_create(
            user=sub.user,
            strategy=other,
            capital=Decimal("1"),
            risk_per_trade=Decimal("0.01"),
            mode="live",
            credential=make_credential(sub.user, label="elsewhere"),
        )
    else:
        elsewhere = subscribe(other, user=sub.user)
    make_trade(elsewhere, status="open", pnl=None)


def _midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


# The live counterparts of test_protections.py's paper cases (the slippage cap and the maximum
# drawdown have their own tests below): the protection, its settings, a history that trips
# it, one just short of it (given the signal's time), and how the reason starts. Capital 1,
# risk 0.01: the entry is worth 0.01 BTC.
LIVE_CASES = [
    pytest.param(
        "daily_loss_limit",
        {"daily_loss_limit_pct": Decimal("1")},
        lambda s, at: _closed(s, "-0.015", _midnight(at)),  # at 00:00 UTC: today
        # a second before midnight is yesterday (UTC); today's loss is below the limit
        lambda s, at: (
            _closed(s, "-0.015", _midnight(at) - timedelta(seconds=1)),
            _closed(s, "-0.005", at - timedelta(minutes=30)),
        ),
        "daily loss limit: 0.01500000 lost today (UTC), the limit is 1% of the capital",
        id="daily_loss_limit",
    ),
    pytest.param(
        "cooldown",
        {"cooldown_after_losses": 2, "cooldown_minutes": 60},
        lambda s, at: (
            _closed(s, "-0.003", at - timedelta(hours=3)),
            _closed(s, "0.001", at - timedelta(minutes=30), "stop loss"),
        ),
        # two in a row, but the cooldown after the last ran out before the signal
        lambda s, at: (
            _closed(s, "-0.003", at - timedelta(hours=3)),
            _closed(s, "-0.003", at - timedelta(minutes=61)),
        ),
        "cooldown: 2 losing trades or stop-outs in a row; no entries until",
        id="cooldown",
    ),
    pytest.param(
        "max_open_trades",
        {"max_open_trades": 1},
        lambda s, at: _open_elsewhere(s, mode="live"),
        lambda s, at: _open_elsewhere(s, mode="paper"),  # the other mode is not counted
        "max open trades: 1 open across your live subscriptions (max 1)",
        id="max_open_trades",
    ),
    pytest.param(
        "max_order_notional",
        {"max_order_notional": Decimal("0.005")},
        lambda s, at: None,
        lambda s, at: StrategySubscription.objects.filter(pk=s.pk).update(
            max_order_notional=Decimal("0.02")
        ),
        "max notional per order: this entry is worth 0.0",
        id="max_order_notional",
    ),
]


@pytest.mark.parametrize(("protection", "protections", "trips", "holds", "reason"), LIVE_CASES)
def test_each_entry_protection_holds_a_live_entry_back_before_any_order_is_sent(
    sim, market, protection, protections, trips, holds, reason
):
    # given two live followers with the same protection: one whose history trips it at the
    # signal's close, one whose history does not
    strategy = StrategyFactory(settings={"signal": "LONG"})
    tripped = live_trader(sim, strategy, **protections).subscription
    fine = live_trader(sim, strategy, **protections).subscription
    at = market[20]
    trips(tripped, at)
    holds(fine, at)
    sim.clock(at)

    # when the entry fans out
    entry = _run(strategy, at)

    # then the tripped one is skipped with the protection's reason, and nothing of it
    # reached the exchange
    skipped = Trade.objects.get(execution=entry, subscription=tripped)
    assert skipped.status == "skipped" and skipped.error.startswith(reason), skipped.error
    assert not Order.objects.filter(trade=skipped).exists()
    assert skipped.client_order_id not in _on_exchange(sim)
    # and the trip is recorded against that trade, and its follower told once
    trip = ProtectionTrip.objects.get(subscription=tripped)
    assert (trip.protection, trip.action, trip.trade_id) == (
        protection,
        "entry_skipped",
        skipped.pk,
    )
    notices = Notification.objects.filter(
        user=tripped.user, event=NotificationEvent.PROTECTION_TRIGGERED
    )
    assert [(n.payload["protection"], n.payload["trade_id"]) for n in notices] == [
        (protection, skipped.pk)
    ]
    # and the other one bought on the exchange as usual
    entered = Trade.objects.get(execution=entry, subscription=fine)
    assert entered.status == "open", entered.error
    assert _on_exchange(sim)[entered.client_order_id]["side"] == "BUY"
    assert not ProtectionTrip.objects.filter(subscription=fine).exists()


def test_max_drawdown_pauses_and_closes_the_live_position_at_market(sim):
    # given a live follower holding 1 BTC of ETH on a capital of 1 (risk 0.1, leverage 10),
    # with a 1.5 % maximum drawdown and its positions to be closed when it trips; on a market
    # flat at 0.05 whose last candle falls 2 %
    closes = _market_that_moves(0.049)
    sim.refresh()
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(
        sim,
        strategy,
        risk="0.1",
        leverage="10",
        max_drawdown_pct=Decimal("1.5"),
        close_on_max_drawdown=True,
    )
    sim.clock(closes[9])
    entry = _run(strategy, closes[9])
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open" and trade.quantity == Decimal("20")

    # when the falling candle closes
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD"})
    sim.clock(closes[11])
    _run(strategy, closes[11])

    # then the subscription is paused with the reason, the trip recorded
    subscription = StrategySubscription.objects.get(pk=trader.subscription.pk)
    assert subscription.status == "paused"
    assert subscription.status_reason.startswith("max drawdown 2.1% ≥ 1.5%")
    trip = ProtectionTrip.objects.get(subscription=subscription)
    assert (trip.protection, trip.action) == ("max_drawdown", "paused_and_closed")
    # and the position was sold on the exchange, once, under the trade's own close order
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "max drawdown"
    close_id = f"sf-{entry.pk}-{subscription.pk}-c{trade.pk}"
    assert trade.exit_client_order_id == close_id
    sold = _on_exchange(sim)[close_id]
    assert (sold["side"], sold["type"], Decimal(sold["quantity"])) == ("SELL", "MARKET", 20)
    assert trade.exit_price == Decimal("0.049") and trade.pnl is not None and trade.pnl < 0
    assert len(sim.orders()) == 2
    assert Position.objects.get(subscription=subscription).side == "flat"


def test_close_now_after_a_timeout_after_accept_leaves_exactly_one_order(sim, market):
    # given an open live position, and an exchange that will accept the next order but hold
    # its answer past the timeout
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    sim.clock(market[10])
    entry = _run(strategy, market[10])
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open"
    sim.faults(next={"timeout_after_accept": 1}, hold_s=4)
    api = client_for(trader.subscription.user)
    url = f"/api/strategies/subscriptions/{trader.subscription.pk}/close"

    # when the follower closes the position now, and asks again
    response = api.post(url)
    again = api.post(url)

    # then the close was looked up by its client order id, not sent twice, and recorded
    assert response.status_code == 200, response.content
    body = response.json()
    assert [t["id"] for t in body["closed_trades"]] == [trade.pk] and body["open_trades"] == []
    assert body["closed_trades"][0]["status"] == "closed"
    stats = sim.stats()
    assert stats["fault_timeout_after_accept"] == 1 and stats["order_create"] == 2
    close_id = f"sf-{entry.pk}-{trader.subscription.pk}-c{trade.pk}"
    on_exchange = _on_exchange(sim)
    assert set(on_exchange) == {trade.client_order_id, close_id}
    assert on_exchange[close_id]["side"] == "SELL" and on_exchange[close_id]["status"] == "FILLED"
    order = Order.objects.get(trade=trade, purpose=f"close:{trade.pk}")
    assert (order.status, order.attempts, order.client_order_id) == ("filled", 1, close_id)
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "closed by hand"
    sold = on_exchange[close_id]
    assert trade.exit_price == Decimal(sold["quote"]) / Decimal(sold["executed"])
    # and the second request found nothing open: 409, and still one close on the exchange
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    assert len(sim.orders()) == 2
    assert Order.objects.filter(trade=trade, purpose=f"close:{trade.pk}").count() == 1


def test_cancel_with_close_after_a_timeout_after_accept_leaves_exactly_one_order(sim, market):
    # given an open live position, and an exchange that will accept the next order but hold
    # its answer past the timeout
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    sim.clock(market[10])
    entry = _run(strategy, market[10])
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open"
    sim.faults(next={"timeout_after_accept": 1}, hold_s=4)
    api = client_for(trader.subscription.user)
    url = f"/api/strategies/subscriptions/{trader.subscription.pk}"

    # when the follower cancels the subscription and asks for its position to be closed
    response = api.delete(f"{url}?close_positions=true")

    # then it is cancelled and the position closed, the close looked up by its client order
    # id after the lost answer rather than sent again
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "cancelled" and body["open_trades"] == []
    assert [t["id"] for t in body["closed_trades"]] == [trade.pk]
    stats = sim.stats()
    assert stats["fault_timeout_after_accept"] == 1 and stats["order_create"] == 2
    close_id = f"sf-{entry.pk}-{trader.subscription.pk}-c{trade.pk}"
    on_exchange = _on_exchange(sim)
    assert set(on_exchange) == {trade.client_order_id, close_id}
    assert on_exchange[close_id]["side"] == "SELL" and on_exchange[close_id]["status"] == "FILLED"
    order = Order.objects.get(trade=trade, purpose=f"close:{trade.pk}")
    assert (order.status, order.attempts, order.client_order_id) == ("filled", 1, close_id)
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "closed by hand"


def _market_that_moves(last: float) -> list[datetime]:
    """Candles flat at 0.05, then one at ``last``."""
    rows = []
    for i in range(12):
        price = 0.05 if i < 11 else last
        rows.append(
            [datetime_to_ms(START + STEP * i), price, price * 1.001, price * 0.999, price, 10.0]
        )
    load_candles(rows=rows)
    return [START + STEP * (i + 1) for i in range(12)]
