"""Paper entries written already filled (trades.orders.paper_fills) and the paths beside them:
a redelivered fan-out, an intent a crash left pending, the paper fill model's figures.

Executions are written as the pipeline records them; their signals are fanned out in process
(``fanout_process``, what a fan-out task runs) or, for the redelivery, by a real worker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from notifications.models import Notification, NotificationEvent
from strategies.models import StrategyExecution
from subscriptions.models import EquityPoint
from tests.factories import StrategyFactory, subscribe
from tests.workers import wait_for
from trades.brokers import OrderRequest, paper_broker
from trades.brokers.paper import PaperBroker
from trades.models import Order, Position, Trade
from trades.orders import order_intents
from trades.purposes import OrderPurpose
from trades.rules import entry_quantity
from trades.services import fanout_process
from trades.tasks import fanout_orders

T0 = datetime(2030, 3, 1, 10, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
CLOSE = Decimal("0.05")


@pytest.fixture(autouse=True)
def _paper(settings):
    # A known fee and slippage, so each fill can be checked against the paper fill model.
    settings.PAPER_FEE_BPS = Decimal("10")
    settings.PAPER_SLIPPAGE_BPS = Decimal("5")
    settings.SIGNAL_MAX_AGE_S = 10**9


def _execution(strategy, i: int = 0, signal: str = "LONG") -> StrategyExecution:
    start = T0 + STEP * i
    return StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=start,
        interval_end=start + STEP,
        status=StrategyExecution.Status.SUCCESS,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        signal={"signal": signal, "price": float(CLOSE)},
        close_price=CLOSE,
    )


def _one_each(execution: StrategyExecution, subs) -> None:
    """One trade, one filled entry order, one fill notice per subscriber, the trade open."""
    for sub in subs:
        trades = list(Trade.objects.filter(execution=execution, subscription=sub))
        orders = list(Order.objects.filter(execution=execution, subscription=sub))
        assert len(trades) == 1 and len(orders) == 1
        assert trades[0].status == Trade.Status.OPEN
        assert orders[0].status == Order.Status.FILLED and orders[0].trade_id == trades[0].pk
        assert orders[0].purpose == OrderPurpose.entry()
        notices = Notification.objects.filter(
            user_id=sub.user_id, event=NotificationEvent.TRADE_FILLED
        )
        assert notices.count() == 1


@pytest.mark.django_db
def test_a_fanout_run_twice_gives_one_order_and_one_trade_per_subscriber():
    # given three paper subscribers and an entry signal fanned out once
    strategy = StrategyFactory()
    subs = [subscribe(strategy, capital=c) for c in ("1", "5", "20")]
    execution = _execution(strategy)
    ids = [s.pk for s in subs]
    fanout_process(execution_id=execution.pk, subscription_ids=ids)
    first = {o.pk: o.updated_at for o in Order.objects.filter(execution=execution)}

    # when the same batch runs again (a redelivered task)
    outcome = fanout_process(execution_id=execution.pk, subscription_ids=ids)

    # then nothing new: one trade and one filled order each, untouched by the second run
    assert outcome.opened == 0
    _one_each(execution, subs)
    assert {o.pk: o.updated_at for o in Order.objects.filter(execution=execution)} == first
    assert Position.objects.filter(subscription__in=subs, side="long").count() == 3
    assert EquityPoint.objects.filter(subscription__in=subs, kind="fill").count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_fanout_task_delivered_twice_to_the_worker_gives_one_order_per_subscriber(
    celery_workers,
):
    # given five paper subscribers and an entry signal
    strategy = StrategyFactory()
    subs = [subscribe(strategy) for _ in range(5)]
    execution = _execution(strategy)
    kwargs = {"execution_id": execution.pk, "subscription_ids": [s.pk for s in subs]}

    # when its fan-out task reaches the worker twice, side by side on its two processes
    for _ in range(2):
        fanout_orders.apply_async(kwargs=kwargs)
    wait_for(
        lambda: StrategyExecution.objects.get(pk=execution.pk).fanout_done >= 2 * len(subs),
        timeout=60,
        what="both deliveries",
    )

    # then each subscriber has one trade and one filled order
    _one_each(execution, subs)
    assert StrategyExecution.objects.get(pk=execution.pk).trades_generated == len(subs)


@pytest.mark.django_db
def test_an_entry_intent_a_crash_left_pending_is_claimed_and_filled_once():
    # given a batch that wrote its trade and order intent, then died before sending
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    execution = _execution(strategy)
    purpose = OrderPurpose.entry()
    cid = purpose.client_order_id(execution_id=execution.pk, subscription_id=sub.pk)
    trade = Trade.objects.create(
        subscription=sub, execution=execution, symbol=strategy.symbol, side="long",
        client_order_id=cid,
    )  # fmt: skip
    request = OrderRequest(
        symbol=strategy.symbol,
        side="buy",
        quantity=Decimal("2"),
        client_order_id=cid,
        reference_price=CLOSE,
        reference_time=execution.interval_end,
    )
    order_intents(execution, [(trade, purpose, request)])

    # when the batch is redelivered, twice
    fanout_process(execution_id=execution.pk, subscription_ids=[sub.pk])
    fanout_process(execution_id=execution.pk, subscription_ids=[sub.pk])

    # then the intent written is the order sent: claimed once, filled once, at its own amount
    order = Order.objects.get(execution=execution, subscription=sub)
    assert order.status == Order.Status.FILLED and order.attempts == 1 and order.send_token == ""
    assert order.filled == Decimal("2")
    trade.refresh_from_db()
    assert trade.status == Trade.Status.OPEN and trade.quantity == Decimal("2")
    assert trade.entry_price == order.average_price
    _one_each(execution, [sub])


@pytest.mark.django_db
def test_paper_fills_price_and_fee_are_the_paper_fill_models():
    # given a paper subscriber and an entry signal at the close
    strategy = StrategyFactory()
    sub = subscribe(strategy, capital="7", risk="0.02")
    execution = _execution(strategy)

    # when it fans out
    fanout_process(execution_id=execution.pk, subscription_ids=[sub.pk])

    # then the trade and its order carry the paper broker's fill of that order, figure for figure
    trade = Trade.objects.get(execution=execution, subscription=sub)
    order = Order.objects.get(execution=execution, subscription=sub)
    quantity = entry_quantity(
        capital=sub.capital,
        risk_per_trade=sub.risk_per_trade,
        leverage=sub.leverage,
        price=CLOSE,
        signal=_signal_of(execution),
    )
    expected = paper_broker().place_market_order(
        OrderRequest(
            symbol=strategy.symbol,
            side="buy",
            quantity=quantity,
            client_order_id=order.client_order_id,
            reference_price=CLOSE,
            reference_time=execution.interval_end,
        )
    )
    assert isinstance(paper_broker(), PaperBroker)
    assert expected.average_price == CLOSE * Decimal("1.0005")  # 5 bps against the buyer
    assert (trade.quantity, trade.entry_price, trade.entry_fee) == (
        expected.quantity,
        expected.average_price,
        expected.fee,
    )
    assert trade.entry_time == execution.interval_end
    assert (order.filled, order.average_price, order.fee, order.fee_currency) == (
        expected.quantity,
        expected.average_price,
        expected.fee,
        expected.fee_currency,
    )
    assert order.exchange_order_id == expected.exchange_order_id == f"paper-{trade.client_order_id}"
    assert order.amount == quantity and order.attempts == 1 and order.closed_at is not None


def _signal_of(execution: StrategyExecution):
    from strategies.signals import Signal

    return Signal.from_json(execution.signal or {})


@pytest.mark.django_db
def test_an_exit_run_twice_closes_each_trade_once_with_one_exit_order():
    # given two paper subscribers holding a long, and an exit signal fanned out once
    strategy = StrategyFactory()
    subs = [subscribe(strategy) for _ in range(2)]
    ids = [s.pk for s in subs]
    entry = _execution(strategy, 0)
    fanout_process(execution_id=entry.pk, subscription_ids=ids)
    exit_execution = _execution(strategy, 1, signal="EXIT_LONG")
    fanout_process(execution_id=exit_execution.pk, subscription_ids=ids)

    # when the exit batch runs again (a redelivered task)
    outcome = fanout_process(execution_id=exit_execution.pk, subscription_ids=ids)

    # then each trade closed once, by one filled exit order, its PnL counted once
    assert outcome.closed == 0
    for sub in subs:
        trade = Trade.objects.get(execution=entry, subscription=sub)
        exits = Order.objects.filter(execution=exit_execution, subscription=sub)
        assert trade.status == Trade.Status.CLOSED and trade.exit_execution_id == exit_execution.pk
        assert [o.status for o in exits] == [Order.Status.FILLED]
        assert exits[0].purpose == OrderPurpose.exit(trade.pk)
        assert trade.exit_client_order_id == exits[0].client_order_id
        assert trade.exit_price == exits[0].average_price == CLOSE * Decimal("0.9995")
        sub.refresh_from_db()
        assert sub.realized_pnl == trade.pnl and sub.fees_paid == trade.fees
        closes = Notification.objects.filter(
            user_id=sub.user_id, event=NotificationEvent.TRADE_CLOSED
        )
        assert closes.count() == 1
        assert Position.objects.get(subscription=sub).side == "flat"


@pytest.mark.django_db
def test_an_exit_intent_a_crash_left_pending_is_claimed_and_filled_once():
    # given an open paper trade whose exit was claimed and its intent written, then the
    # batch died before sending it
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    entry = _execution(strategy, 0)
    fanout_process(execution_id=entry.pk, subscription_ids=[sub.pk])
    trade = Trade.objects.get(execution=entry, subscription=sub)
    exit_execution = _execution(strategy, 1, signal="EXIT_LONG")
    purpose = OrderPurpose.exit(trade.pk)
    cid = purpose.client_order_id(execution_id=exit_execution.pk, subscription_id=sub.pk)
    Trade.objects.filter(pk=trade.pk).update(exit_execution=exit_execution)
    request = OrderRequest(
        symbol=trade.symbol,
        side="sell",
        quantity=trade.quantity,
        client_order_id=cid,
        reference_price=CLOSE,
        reference_time=exit_execution.interval_end,
        reduce_only=True,
    )
    order_intents(exit_execution, [(trade, purpose, request)])

    # when the exit batch is redelivered, twice
    fanout_process(execution_id=exit_execution.pk, subscription_ids=[sub.pk])
    fanout_process(execution_id=exit_execution.pk, subscription_ids=[sub.pk])

    # then that intent was claimed once and filled, and it closed the trade
    order = Order.objects.get(execution=exit_execution, subscription=sub)
    assert order.pk and order.client_order_id == cid
    assert order.status == Order.Status.FILLED and order.attempts == 1
    trade.refresh_from_db()
    assert trade.status == Trade.Status.CLOSED and trade.exit_price == order.average_price
    sub.refresh_from_db()
    assert sub.realized_pnl == trade.pnl
