"""Trades (and orders and positions, when present) in the admin: readable, never editable;
the subscription admin's actions on positions and its protections."""

from __future__ import annotations

from decimal import Decimal

import pytest

from subscriptions.models import StrategySubscription
from tests.api.helpers import admin_form_data, admin_url, make_position, make_trade
from tests.factories import StrategyFactory, subscribe
from trades.models import Order, Position, ProtectionTrip, Trade


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


@pytest.mark.django_db
def test_operators_close_positions_now_or_cancel_and_close_through_the_services(admin_client):
    # given two paper subscriptions holding a position, one with a protection that tripped
    holders = []
    for _ in range(2):
        subscription = subscribe(StrategyFactory())
        trade = make_trade(subscription, status="open", pnl=None)
        make_position(subscription, mark_price=Decimal("0.06"))
        holders.append((subscription, trade))
    (closing, closing_trade), (cancelling, cancelling_trade) = holders
    ProtectionTrip.objects.create(
        subscription=closing,
        protection="max_drawdown",
        action="paused",
        reason="max drawdown 12.3% ≥ 10%",
    )
    changelist = admin_url(StrategySubscription, "changelist")

    # when an operator closes the first one's position now, and cancels the second with it
    closed = admin_client.post(
        changelist,
        {"action": "close_positions_now", "_selected_action": [closing.pk]},
        follow=True,
    )
    cancelled = admin_client.post(
        changelist,
        {"action": "cancel_and_close", "_selected_action": [cancelling.pk]},
        follow=True,
    )

    # then each went through the close machinery, and the pages say what they did
    assert "1 trade(s) closed" in closed.content.decode()
    assert "cancelled, 1 trade(s) closed" in cancelled.content.decode()
    for trade in (closing_trade, cancelling_trade):
        trade.refresh_from_db()
        assert trade.status == "closed" and trade.metadata["exit_reason"] == "closed by hand"
        assert Order.objects.get(trade=trade).purpose == f"close:{trade.pk}"
    statuses = StrategySubscription.objects.in_bulk([closing.pk, cancelling.pk])
    assert (statuses[closing.pk].status, statuses[cancelling.pk].status) == ("active", "cancelled")
    # and the subscription's page shows its protections and their trips
    page = admin_client.get(admin_url(StrategySubscription, "change", closing.pk)).content
    assert "Protections" in page.decode() and "max drawdown 12.3% ≥ 10%" in page.decode()


@pytest.mark.django_db
def test_protections_are_edited_in_the_admin_with_the_api_rules(admin_client):
    subscription = subscribe(StrategyFactory())
    url = admin_url(StrategySubscription, "change", subscription.pk)
    page = admin_client.get(url)
    # a cooldown without its duration is refused, nothing changes
    bad = admin_client.post(url, admin_form_data(page, cooldown_after_losses="3"))
    assert bad.status_code == 200
    assert "cooldown_minutes" in bad.context["adminform"].form.errors
    # a maximum drawdown is saved through the service, its peak started at the equity
    good = admin_client.post(url, admin_form_data(page, max_drawdown_pct="12.5"))
    assert good.status_code == 302
    fresh = StrategySubscription.objects.get(pk=subscription.pk)
    assert fresh.max_drawdown_pct == Decimal("12.5") and fresh.equity_peak == Decimal("1000")


@pytest.mark.django_db
def test_operators_resync_a_divergence_by_adopting_the_exchanges_quantity(admin_client):
    # given a subscription holding 2 whose account holds 1.5 (as the reconciliation found)
    from django.utils import timezone

    from trades.models import Divergence

    subscription = subscribe(StrategyFactory())
    trade = make_trade(subscription, status="open", pnl=None)
    make_position(subscription)
    now = timezone.now()
    divergence = Divergence.objects.create(
        subscription=subscription,
        kind="balance",
        subject="ETH",
        symbol="ETH/BTC",
        expected=Decimal("2"),
        actual=Decimal("1.5"),
        first_seen_at=now,
        last_seen_at=now,
    )
    # when an operator adopts the exchange's quantity from the divergence list
    page = admin_client.post(
        admin_url(Divergence, "changelist"),
        {"action": "resync_adopt", "_selected_action": [divergence.pk]},
        follow=True,
    )
    # then the trade and position hold the exchange's quantity, recorded with the operator
    assert page.status_code == 200
    trade.refresh_from_db()
    divergence.refresh_from_db()
    assert trade.quantity == Decimal("1.5")
    assert trade.metadata["resync"][0]["via"] == "admin"
    assert Position.objects.get(subscription=subscription).quantity == Decimal("1.5")
    assert (divergence.status, divergence.resync_mode) == ("resolved", "adopt")
    assert divergence.resync_by is not None and divergence.resync_by.is_superuser
    # and the divergence's page shows it, read-only
    detail = admin_client.get(admin_url(Divergence, "change", divergence.pk)).content.decode()
    assert "adopt by" in detail
    # and the subscription's page shows its divergence report from the signals
    page = admin_client.get(admin_url(StrategySubscription, "change", subscription.pk))
    assert "Divergence from the signals" in page.content.decode()
    assert "slippage_bps" in page.content.decode()
