"""Every model in the admin: its list, its search and its change page load for a superuser."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from backtests.models import Backtest, StrategyRecord
from markets.models import Candle
from notifications.models import Delivery, Notification, NotificationPreference, Webhook
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from subscriptions.models import BrokerCredential, StrategySubscription
from tests.admin_data import admin_data_create
from tests.factories import UserFactory
from trades.models import Order, Position, ProtectionTrip, Trade

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
    ProtectionTrip,
    Backtest,
    StrategyRecord,
    Notification,
    NotificationPreference,
    Webhook,
    Delivery,
]


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


@pytest.mark.django_db
@pytest.mark.parametrize("model", PLATFORM_MODELS, ids=lambda m: m._meta.label)
def test_a_list_costs_the_same_queries_however_many_rows(
    admin_client, everything, model, django_assert_max_num_queries
):
    # given the list's cost with one tenant's rows
    url = _url(model, "changelist")
    with CaptureQueriesContext(connection) as one_tenant:
        assert admin_client.get(url).status_code == 200
    # when three more tenants have as many
    for _ in range(3):
        admin_data_create(owner=UserFactory())
    # then the list of all of them costs no more queries
    with django_assert_max_num_queries(len(one_tenant)):
        assert admin_client.get(url).status_code == 200


PASSWORD = "a-long-unusual-passphrase"


def _user_add(client, *, username: str, email: str):
    form = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
    return client.post(_url(get_user_model(), "add"), {**form, "usable_password": "true"})


def _user_edit(client, user, *, email: str):
    form = {"username": user.username, "email": email, "is_active": "on"}
    joined = {"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    return client.post(_url(get_user_model(), "change", user.pk), {**form, **joined})


@pytest.mark.django_db
def test_the_user_admin_refuses_an_email_another_account_has_in_any_case(admin_client):
    # given an account with an address, and another account
    UserFactory(email="Carol@Example.com")
    other = UserFactory(email="dave@example.com")

    # when an operator adds an account, and edits the other, with that address in another case
    added = _user_add(admin_client, username="carol2", email="carol@example.COM")
    edited = _user_edit(admin_client, other, email="CAROL@example.com")

    # then both are refused on the email, and nothing changed
    for response in (added, edited):
        assert response.status_code == 200
        assert "Another account has this email" in str(response.context["adminform"].form.errors)
    assert not get_user_model().objects.filter(username="carol2").exists()
    other.refresh_from_db()
    assert other.email == "dave@example.com"


@pytest.mark.django_db
def test_the_user_admin_adds_an_account_with_a_new_email_and_keeps_its_own(admin_client):
    # given an account
    user = UserFactory(email="erin@example.com")

    # when an operator adds one with a new address, and saves the first with its own recased
    added = _user_add(admin_client, username="frank", email="frank@example.com")
    kept = _user_edit(admin_client, user, email="Erin@example.com")

    # then both are saved
    assert added.status_code == 302 and kept.status_code == 302
    assert get_user_model().objects.get(username="frank").email == "frank@example.com"
    user.refresh_from_db()
    assert user.email == "Erin@example.com"
