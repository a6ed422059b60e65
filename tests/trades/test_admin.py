"""Trades (and orders and positions, when present) in the admin: readable, never editable."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.api.helpers import admin_url, make_trade
from tests.factories import StrategyFactory, subscribe
from trades.models import Order, Position, Trade


@pytest.fixture
def failed_trade():
    subscription = subscribe(StrategyFactory())
    return make_trade(
        subscription,
        status="failed",
        pnl=None,
        error="InsufficientFunds: balance <0.1> BTC",
        metadata={"signal": {"signal": "LONG"}},
    )


@pytest.mark.django_db
def test_trade_page_shows_the_error_and_metadata_readably(admin_client, failed_trade):
    response = admin_client.get(admin_url(Trade, "change", failed_trade.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "InsufficientFunds: balance &lt;0.1&gt; BTC" in html
    assert "&quot;signal&quot;: &quot;LONG&quot;" in html
    assert failed_trade.client_order_id in html


@pytest.mark.django_db
def test_trades_cannot_be_added_changed_or_deleted(admin_client, failed_trade):
    change = admin_url(Trade, "change", failed_trade.pk)
    assert admin_client.post(change, {"status": "closed", "pnl": "100"}).status_code == 403
    assert admin_client.get(admin_url(Trade, "add")).status_code == 403
    delete = admin_url(Trade, "delete", failed_trade.pk)
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Trade.objects.get(pk=failed_trade.pk).status == "failed"


@pytest.mark.django_db
def test_trades_are_searchable_by_order_id_and_user(admin_client, failed_trade):
    url = admin_url(Trade, "changelist")
    user = failed_trade.subscription.user.username
    for query in (failed_trade.client_order_id, user):
        assert admin_client.get(url, {"q": query}).context["cl"].result_count == 1


@pytest.mark.django_db
def test_orders_and_positions_are_read_only(admin_client, failed_trade):
    order = Order.objects.create(
        subscription=failed_trade.subscription,
        execution=failed_trade.execution,
        trade=failed_trade,
        purpose="entry",
        client_order_id=failed_trade.client_order_id,
        symbol=failed_trade.symbol,
        side="buy",
        amount=Decimal("1"),
    )
    position = Position.objects.create(
        subscription=failed_trade.subscription, symbol=failed_trade.symbol
    )
    for model, obj in ((Order, order), (Position, position)):
        assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200
        assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
        assert admin_client.get(admin_url(model, "add")).status_code == 403
