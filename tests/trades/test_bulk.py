from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from strategies.models import StrategyExecution
from subscriptions.models import StrategySubscription
from tests.factories import StrategyFactory, subscribe
from trades.brokers import OrderRequest
from trades.bulk import bulk_add
from trades.models import Order, Trade
from trades.orders import order_intents
from trades.purposes import OrderPurpose
from trades.services import fanout_process

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.SIGNAL_MAX_AGE_S = 10**9


def _entered(strategy, sub) -> tuple[StrategyExecution, Trade]:
    execution = StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=T0,
        interval_end=T0 + STEP,
        status=StrategyExecution.Status.SUCCESS,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        signal={"signal": "LONG", "price": 0.05},
        close_price=Decimal("0.05"),
    )
    fanout_process(execution_id=execution.pk, subscription_ids=[sub.pk])
    return execution, Trade.objects.get(subscription=sub, execution=execution)


def _request(trade: Trade, purpose: OrderPurpose, quantity: Decimal) -> OrderRequest:
    return OrderRequest(
        symbol=trade.symbol,
        side="sell",
        quantity=quantity,
        client_order_id=purpose.client_order_id(
            execution_id=trade.execution_id, subscription_id=trade.subscription_id
        ),
        reference_price=Decimal("0.05"),
        reference_time=T0,
        reduce_only=True,
    )


@pytest.mark.django_db
def test_a_new_intent_is_returned_as_the_row_stored():
    # given an open trade
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    execution, trade = _entered(strategy, sub)
    # when an intent is written with a quantity finer than its column keeps
    purpose = OrderPurpose.exit(trade.pk)
    fine = Decimal("1.123456789012345678901")
    order = order_intents(execution, [(trade, purpose, _request(trade, purpose, fine))])[
        (sub.pk, purpose)
    ]
    # then the intent returned is the row, its quantity as the column stored it
    stored = Order.objects.get(pk=order.pk)
    assert order.amount == stored.amount != fine
    assert (order.client_order_id, order.status, order.purpose) == (
        stored.client_order_id,
        stored.status,
        stored.purpose,
    )


@pytest.mark.django_db
def test_an_intent_written_already_is_returned_as_it_is_now():
    # given an entry that filled (its intent is final)
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    execution, trade = _entered(strategy, sub)
    entry = Order.objects.get(trade=trade)
    assert entry.status == Order.Status.FILLED
    # when the same intent is asked for again (a redelivered batch), with another quantity
    purpose = OrderPurpose.entry()
    again = order_intents(
        execution, [(trade, purpose, _request(trade, purpose, entry.amount * 2))]
    )[(sub.pk, purpose)]
    # then it is the existing row, filled, with its own quantity, and no second row exists
    assert (again.pk, again.status, again.amount) == (entry.pk, entry.status, entry.amount)
    assert Order.objects.filter(trade=trade, purpose=purpose).count() == 1


@pytest.mark.django_db
def test_bulk_add_adds_to_what_the_rows_hold():
    # given two subscriptions with realized PnL already
    strategy = StrategyFactory()
    first, second = subscribe(strategy), subscribe(strategy)
    StrategySubscription.objects.filter(pk=first.pk).update(
        realized_pnl=Decimal("1.5"), fees_paid=Decimal("0.1")
    )
    # when a batch adds its closes to both
    bulk_add(
        StrategySubscription,
        ["realized_pnl", "fees_paid"],
        {first.pk: (Decimal("-0.5"), Decimal("0.01")), second.pk: (Decimal("2"), Decimal("0"))},
    )
    # then each row holds the sum, the other subscriptions untouched
    rows = dict(
        StrategySubscription.objects.filter(strategy=strategy).values_list("pk", "realized_pnl")
    )
    assert rows == {first.pk: Decimal("1.0"), second.pk: Decimal("2")}
    assert StrategySubscription.objects.get(pk=first.pk).fees_paid == Decimal("0.11")
