from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from strategies.models import StrategyExecution
from subscriptions.models import EquityPoint
from subscriptions.services import subscription_update_settings
from tests.factories import StrategyFactory, subscribe
from trades.brokers import OrderRequest, OrderResult, OrderStatus
from trades.models import Order, Position, Trade
from trades.orders import Leg, Tally, orders_claim, orders_record, positions_settle
from trades.positions import equity_points_daily
from trades.selectors import subscription_stats
from trades.services import fanout_process, trades_check_stops
from trades.tasks import equity_daily

# Candles close after the subscriptions are made (tomorrow 22:00 UTC, so midnight is near).
T0 = datetime.now(UTC).replace(hour=22, minute=0, second=0, microsecond=0) + timedelta(days=1)
STEP = timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _paper(settings):
    # A known fee and no slippage, so every figure below can be checked by hand.
    settings.PAPER_FEE_BPS = Decimal("10")
    settings.PAPER_SLIPPAGE_BPS = Decimal("0")
    settings.SIGNAL_MAX_AGE_S = 10**9


def _execution(
    strategy, i: int, close: str, signal: str = "HOLD", base: datetime = T0
) -> StrategyExecution:
    start = base + STEP * i
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


def _close(strategy, i: int, close: str) -> StrategyExecution:
    """A candle close: the stop check values the holders' positions at the close."""
    execution = _execution(strategy, i, close)
    price = Decimal(close)
    trades_check_stops(execution=execution, open_price=price, high=price, low=price)
    return execution


def _signal(
    strategy, i: int, close: str, signal: str, subs, base: datetime = T0
) -> StrategyExecution:
    execution = _execution(strategy, i, close, signal, base)
    fanout_process(execution_id=execution.pk, subscription_ids=[s.pk for s in subs])
    return execution


def _points(sub) -> list[EquityPoint]:
    return list(EquityPoint.objects.filter(subscription=sub).order_by("time", "id"))


@pytest.mark.django_db
def test_equity_through_an_entry_a_close_and_an_exit_with_fees():
    # given a paper subscriber with 1000 of capital
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    # when it enters long at 0.05, a candle closes at 0.06, and it exits at 0.055
    _signal(strategy, 0, "0.05", "LONG", [sub])
    trade = Trade.objects.get(subscription=sub)
    _close(strategy, 1, "0.06")
    _signal(strategy, 2, "0.055", "EXIT_LONG", [sub])
    # then the curve has the subscribe, the entry fill, the close and the exit fill
    points = _points(sub)
    assert [p.kind for p in points] == ["capital_change", "fill", "close", "fill"]
    start, entry, close, exit_ = points
    assert start.equity == Decimal("1000") and start.capital == Decimal("1000")
    qty, fee_in = trade.quantity, trade.entry_fee
    assert fee_in > 0
    # at the entry the position is worth what was paid: only the fee is lost
    assert entry.time == T0 + STEP and entry.equity == Decimal("1000") - fee_in
    assert entry.unrealized == -fee_in and entry.realized == 0
    # at the close it is valued at the close price
    assert close.time == T0 + STEP * 2
    assert close.equity == Decimal("1000") + (Decimal("0.06") - Decimal("0.05")) * qty - fee_in
    # after the exit all is realized, net of both fees
    trade.refresh_from_db()
    assert exit_.unrealized == 0 and exit_.realized == trade.pnl
    assert exit_.equity == Decimal("1000") + trade.pnl
    assert exit_.fees == trade.entry_fee + trade.exit_fee and trade.exit_fee > 0


@pytest.mark.django_db
def test_a_close_that_changes_nothing_writes_no_point():
    # given a holder and a flat subscriber
    strategy = StrategyFactory()
    holder, flat = subscribe(strategy), subscribe(strategy)
    _signal(strategy, 0, "0.05", "LONG", [holder])
    before = {s.pk: len(_points(s)) for s in (holder, flat)}
    # when two closes come at the same price as the last one, then one that moves
    _close(strategy, 1, "0.05")
    _close(strategy, 2, "0.05")
    _close(strategy, 3, "0.051")
    # then only the move wrote a point, and the flat subscriber wrote none
    assert len(_points(holder)) == before[holder.pk] + 1
    assert _points(holder)[-1].kind == "close" and _points(holder)[-1].time == T0 + STEP * 4
    assert len(_points(flat)) == before[flat.pk]


@pytest.mark.django_db
def test_the_first_close_of_a_day_writes_a_daily_point_even_unchanged():
    # given a holder whose last point is from the evening before
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    _signal(strategy, 0, "0.05", "LONG", [sub])
    count = len(_points(sub))
    # when closes at the same price come after midnight (T0 is 22:00 UTC)
    _close(strategy, 30, "0.05")  # 00:35
    _close(strategy, 31, "0.05")
    # then the first one wrote a daily point, the second nothing
    points = _points(sub)
    assert len(points) == count + 1
    assert points[-1].kind == "daily" and points[-1].time.date() == (T0 + timedelta(days=1)).date()


@pytest.mark.django_db
def test_the_daily_task_gives_flat_subscriptions_one_point_a_day():
    # given a flat subscriber and a cancelled one
    strategy = StrategyFactory()
    flat = subscribe(strategy)
    day = timezone.now() + timedelta(days=1)
    # when the daily points are written twice that day
    written = equity_points_daily(at=day)
    again = equity_points_daily(at=day + timedelta(minutes=1))
    # then one point per subscription, once
    assert written == 1 and again == 0
    point = _points(flat)[-1]
    assert point.kind == "daily" and point.equity == Decimal("1000")


@pytest.mark.django_db
def test_a_capital_change_is_an_event_and_leaves_the_history_alone():
    # given a subscriber that made a profit on 1000 of capital
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    # (it subscribed two hours ago and traded an hour ago: the change below happens now)
    earlier = timezone.now() - timedelta(hours=1)
    EquityPoint.objects.filter(subscription=sub).update(time=earlier - timedelta(hours=1))
    _signal(strategy, 0, "0.05", "LONG", [sub], base=earlier)
    _signal(strategy, 1, "0.06", "EXIT_LONG", [sub], base=earlier)
    history = [(p.pk, p.equity, p.capital) for p in _points(sub)]
    pnl = Trade.objects.get(subscription=sub).pnl
    assert pnl is not None and pnl > 0
    return_before = subscription_stats(subscription=sub)["return_pct"]
    # when the capital is changed to 0.5
    sub = subscription_update_settings(subscription=sub, capital=Decimal("0.5"))
    # then the earlier points are unchanged, and the event carries the new and old values
    points = _points(sub)
    assert [(p.pk, p.equity, p.capital) for p in points[:-1]] == history
    event = points[-1]
    assert event.kind == "capital_change" and event.capital == Decimal("0.5")
    assert event.equity == Decimal("0.5") + pnl
    assert event.detail["capital"] == "0.5" and event.detail["previous"]["capital"].startswith(
        "1000"
    )
    # and the return is still the one earned on 1000, not recomputed on 0.5
    stats = subscription_stats(subscription=sub)
    assert stats["return_pct"] == pytest.approx(return_before)
    assert stats["return_pct"] == pytest.approx(float(pnl / 1000 * 100))


@pytest.mark.django_db
def test_settings_saved_unchanged_write_no_capital_change():
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    subscription_update_settings(subscription=sub, capital=Decimal("1000.000"))
    assert [p.kind for p in _points(sub)] == ["capital_change"]


@pytest.mark.django_db
def test_return_is_time_weighted_across_capital_changes():
    # given +10 % on 1000, then the capital doubled, then +10 % of the equity again
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    _add_point(sub, minutes=5, capital="1000", pnl="100")
    Position.objects.create(subscription=sub, symbol="ETH/BTC", realized_pnl=Decimal("100"))
    sub = subscription_update_settings(subscription=sub, capital=Decimal("2000"))
    _add_point(sub, minutes=2 * 24 * 60, capital="2000", pnl="310")  # 2100 → 2310
    # when the stats are read
    stats = subscription_stats(subscription=sub)
    # then the sub-period returns chain: 1.1 * 1.1 - 1
    assert stats["return_pct"] == pytest.approx(21.0)
    assert Decimal(stats["equity"]) == Decimal("2310")


@pytest.mark.django_db
def test_max_drawdown_pct_is_a_percentage_of_the_peak():
    # given equity 1000 → 1200 → 1050 → 1100
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    for i, pnl in enumerate(("200", "50", "100"), start=1):
        _add_point(sub, minutes=5 * i, capital="1000", pnl=pnl)
    # when the stats are read
    stats = subscription_stats(subscription=sub)
    # then the fall from 1200 to 1050 is 12.5 %
    assert stats["max_drawdown_pct"] == pytest.approx(12.5)
    assert stats["max_drawdown"] == Decimal("150")
    assert stats["return_pct"] == pytest.approx(10.0)


def _add_point(sub, *, minutes: int, capital: str, pnl: str) -> EquityPoint:
    """A stored close point, as the candle-close valuation writes it, ``minutes`` after a
    moment a day before the subscription (its first point is moved there)."""
    base = timezone.now() - timedelta(days=1)
    EquityPoint.objects.filter(subscription=sub, detail__subscribed=True).update(time=base)
    return EquityPoint.objects.create(
        subscription=sub,
        time=base + timedelta(minutes=minutes),
        kind="close",
        equity=Decimal(capital) + Decimal(pnl),
        capital=Decimal(capital),
        realized=Decimal(pnl),
        unrealized=Decimal(0),
        fees=Decimal(0),
    )


@pytest.mark.django_db
def test_the_daily_task_writes_through_the_service():
    # given a flat subscriber with no point today (its subscribe point moved to yesterday)
    sub = subscribe(StrategyFactory())
    EquityPoint.objects.filter(subscription=sub).update(time=timezone.now() - timedelta(days=1))
    # when the beat task runs
    written = equity_daily.apply().get()
    # then it wrote today's point
    assert written == 1 and _points(sub)[-1].kind == "daily"


@pytest.mark.django_db
def test_a_replay_of_past_candles_measures_the_return_in_the_order_things_happened():
    # given a subscription made now, and a replay of candles from 2018 through the pipeline
    from core.time_utils import datetime_to_ms
    from execution.services import execution_run
    from strategies.services import strategy_update_settings
    from tests.factories import flat_candles, load_candles
    from tests.strategy_code import SCRIPTED

    start = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(start), count=20))
    strategy = StrategyFactory(settings={"signal": "LONG"})
    sub = subscribe(strategy, capital="1000")
    assert strategy.code == SCRIPTED

    # when it enters at one close and exits at a later one (closes older than the subscription)
    execution_run(
        strategy_id=strategy.pk,
        interval_start=start + STEP * 4,
        trigger="replay",
        inline_fanout=True,
    )
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    execution_run(
        strategy_id=strategy.pk,
        interval_start=start + STEP * 9,
        trigger="replay",
        inline_fanout=True,
    )

    # then the return is what the trade made on the capital, not undone by the later-dated
    # point of subscribing
    sub.refresh_from_db()
    stats = subscription_stats(subscription=sub)
    assert sub.realized_pnl != 0
    assert stats["return_pct"] == pytest.approx(float(sub.realized_pnl / 1000 * 100))
    assert stats["equity"] == Decimal("1000") + sub.realized_pnl


@pytest.mark.django_db
def test_more_of_an_open_entry_filling_later_writes_a_fill_point():
    # given a subscriber whose entry had filled half when it was recorded (a live limit order
    # the order sync follows), its intent back in the sync's hands
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="1000")
    _signal(strategy, 0, "0.05", "LONG", [sub])
    trade = Trade.objects.get(subscription=sub)
    full, fee, price = trade.quantity, trade.entry_fee, trade.entry_price
    Trade.objects.filter(pk=trade.pk).update(quantity=full / 2, entry_fee=fee / 2)
    order = Order.objects.get(trade=trade)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.UNKNOWN, send_token="")
    trade.refresh_from_db()
    order.refresh_from_db()
    request = OrderRequest(
        symbol=trade.symbol,
        side="buy",
        quantity=full,
        client_order_id=order.client_order_id,
        reference_price=price,
        reference_time=trade.entry_time,
    )
    before = len(_points(sub))

    # when the sync finds the rest filled
    legs = orders_claim([Leg(sub, trade, order, request)])
    legs[0].result = OrderResult(OrderStatus.FILLED, quantity=full, average_price=price, fee=fee)
    tally = Tally()
    filled = orders_record(legs, tally)
    positions_settle(subscriptions={sub.pk: sub}, symbol=trade.symbol, filled=filled, tally=tally)

    # then a fill point values the whole position, net of the whole fee
    points = _points(sub)
    assert len(points) == before + 1
    assert points[-1].kind == "fill" and points[-1].equity == Decimal("1000") - fee
    assert Position.objects.get(subscription=sub).quantity == full


@pytest.mark.django_db
def test_a_close_values_holders_from_their_open_trades_and_stored_realized_part():
    # given a holder whose position was stored, and one whose stored position no longer
    # matches its open trades (its fill was recorded, the refresh after it never ran)
    strategy = StrategyFactory()
    kept, stale = subscribe(strategy, capital="1000"), subscribe(strategy, capital="1000")
    _signal(strategy, 0, "0.05", "LONG", [kept, stale])
    Position.objects.filter(subscription=stale).update(
        side=Position.Side.FLAT, quantity=0, average_entry_price=None, open_fees=0
    )
    # when a candle closes at 0.06
    _close(strategy, 1, "0.06")
    # then both are valued at the close from their trades: the stale one is recomputed whole
    for sub in (kept, stale):
        trade = Trade.objects.get(subscription=sub)
        position = Position.objects.get(subscription=sub)
        gain = (Decimal("0.06") - trade.entry_price) * trade.quantity - trade.entry_fee
        assert position.side == Position.Side.LONG and position.quantity == trade.quantity
        assert position.mark_price == Decimal("0.06") and position.unrealized_pnl == gain
        assert _points(sub)[-1].kind == "close"
        assert _points(sub)[-1].equity == Decimal("1000") + gain
