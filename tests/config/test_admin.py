"""Every model in the admin: its list, its search and its change page load for a superuser."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse

from markets.models import Candle
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import subscription_create
from tests.api.helpers import make_credential, make_trade
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from trades.models import Order, Position, Trade

PLATFORM_MODELS = [
    Strategy,
    StrategyVersion,
    StrategySubscription,
    BrokerCredential,
    StrategyExecution,
    Candle,
    Trade,
    Order,
    Position,
]


@pytest.fixture
def everything(admin_user):
    """At least one row of every platform model, with the awkward values filled in."""
    strategy = StrategyFactory(owner=admin_user, settings={"fast": 5}, is_public=True)
    credential = make_credential(admin_user)
    live = subscription_create(
        user=admin_user,
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=credential,
    )
    paper = subscribe(strategy)
    trade = make_trade(paper, error="exchange said <no>", metadata={"note": "x"})
    make_trade(live, status="open", pnl=None)
    trade.execution.logs = "line 1\nline 2"
    trade.execution.save(update_fields=["logs"])
    load_candles(rows=flat_candles(start_ms=1515560100000, count=3))
    Order.objects.create(
        subscription=paper,
        execution=trade.execution,
        trade=trade,
        purpose="entry",
        client_order_id=trade.client_order_id,
        symbol=trade.symbol,
        side="buy",
        amount=Decimal("2"),
        error="rejected: <insufficient balance>",
    )
    Position.objects.create(
        subscription=paper, symbol=trade.symbol, side="long", quantity=Decimal("2")
    )


def _registered():
    return sorted(admin.site._registry, key=lambda m: m._meta.label)


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.django_db
def test_every_platform_model_is_registered():
    missing = [m._meta.label for m in PLATFORM_MODELS if m not in admin.site._registry]
    assert missing == []


@pytest.mark.django_db
@pytest.mark.parametrize("model", _registered(), ids=lambda m: m._meta.label)
def test_changelist_search_and_change_page_load(admin_client, everything, model):
    model_admin = admin.site._registry[model]
    # the list, with its filters and columns rendered
    assert admin_client.get(_url(model, "changelist")).status_code == 200
    if model_admin.search_fields:
        assert admin_client.get(_url(model, "changelist"), {"q": "x"}).status_code == 200
    # every sortable column
    for index in range(len(model_admin.list_display)):
        response = admin_client.get(_url(model, "changelist"), {"o": str(index + 1)})
        assert response.status_code == 200, (model, index)
    # the change (or view) page of a row
    obj = model.objects.first()
    if model in PLATFORM_MODELS:
        assert obj is not None, model
    if obj is not None:
        assert admin_client.get(_url(model, "change", quote(obj.pk))).status_code == 200


@pytest.mark.django_db
def test_list_filters_in_urls_work(admin_client, everything):
    strategy = Strategy.objects.first()
    checks = [
        (StrategySubscription, {"status__exact": "active", "mode__exact": "live"}),
        (StrategySubscription, {"strategy__id__exact": strategy.pk}),
        (StrategyExecution, {"strategy__id__exact": strategy.pk, "status__exact": "success"}),
        (Trade, {"status__exact": "closed", "side__exact": "long"}),
        (BrokerCredential, {"in_use": "yes"}),
        (BrokerCredential, {"in_use": "no"}),
        (Strategy, {"status__exact": "active", "is_public__exact": "1"}),
        (Candle, {"resolution": "5m"}),
    ]
    for model, params in checks:
        response = admin_client.get(_url(model, "changelist"), params)
        assert response.status_code == 200, (model, params)
