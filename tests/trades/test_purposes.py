"""Order purposes: one typed value, its stored form and the client order id derived from it."""

from __future__ import annotations

import pickle

import pytest

from tests.api.helpers import make_trade
from tests.factories import StrategyFactory, subscribe
from trades.models import Order
from trades.purposes import OrderPurpose, PurposeKind

CASES = [
    (OrderPurpose.entry(), "entry", "sf-7-9-e"),
    (OrderPurpose.exit(12), "exit:12", "sf-7-9-x12"),
    (OrderPurpose.protective(PurposeKind.STOP, 12), "stop:12", "sf-7-9-s12"),
    (OrderPurpose.protective(PurposeKind.TAKE, 12), "take:12", "sf-7-9-t12"),
    (OrderPurpose.close(12), "close:12", "sf-7-9-c12"),
]


@pytest.mark.parametrize(("purpose", "stored", "client_id"), CASES)
def test_a_purpose_is_its_stored_form_and_gives_the_client_order_id_orders_carry(
    purpose, stored, client_id
):
    # given a purpose built by its constructor
    # when it is compared, parsed back and turned into a client order id
    parsed = OrderPurpose.parse(stored)

    # then it equals its stored form, round-trips, and keeps the id format orders carry
    assert purpose == stored and str(purpose) == stored
    assert (parsed.kind, parsed.trade_id) == (purpose.kind, purpose.trade_id)
    assert purpose.client_order_id(execution_id=7, subscription_id=9) == client_id
    assert pickle.loads(pickle.dumps(purpose)).trade_id == purpose.trade_id


def test_protective_purposes_name_their_exit_reason():
    # given a stop and a take profit
    stop = OrderPurpose.protective(PurposeKind.STOP, 3)
    take = OrderPurpose.protective(PurposeKind.TAKE, 3)

    # when they are asked what a fill means
    # then each says why it closes the trade, and an exit is not protective
    assert (stop.is_protective, stop.exit_reason) == (True, "stop loss")
    assert (take.is_protective, take.exit_reason) == (True, "take profit")
    assert not OrderPurpose.exit(3).is_protective


@pytest.mark.parametrize("stored", ["", "exit", "entry:3", "stop:x", "shut:3", "stop:3:4"])
def test_strings_that_are_no_purpose_are_refused(stored):
    # given a string that no constructor makes
    # when it is parsed
    # then it is refused
    with pytest.raises(ValueError, match="purpose"):
        OrderPurpose.parse(stored)


def test_a_protective_purpose_must_be_a_stop_or_a_take():
    # given an exit kind
    # when it is made protective
    # then it is refused
    with pytest.raises(ValueError, match="not a protective"):
        OrderPurpose.protective(PurposeKind.EXIT, 3)


@pytest.mark.django_db
def test_orders_read_back_their_purpose_typed():
    # given an order stored with a stop purpose
    trade = make_trade(subscribe(StrategyFactory()), status="open", pnl=None)
    Order.objects.create(
        subscription=trade.subscription,
        execution=trade.execution,
        trade=trade,
        purpose=OrderPurpose.protective(PurposeKind.STOP, trade.pk),
        client_order_id="sf-test-s",
        symbol=trade.symbol,
        side="sell",
    )

    # when it is read back
    order = Order.objects.get(trade=trade)

    # then its purpose is typed again
    assert isinstance(order.purpose, OrderPurpose)
    assert (order.purpose.kind, order.purpose.trade_id) == (PurposeKind.STOP, trade.pk)
