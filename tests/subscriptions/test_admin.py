"""The subscription admin goes through subscriptions.services; credentials stay masked."""

from __future__ import annotations

from decimal import Decimal

import pytest

from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import strategy_retire, subscription_create
from tests.api.helpers import admin_form_data, admin_url, is_registered, make_credential
from tests.factories import StrategyFactory, subscribe

CHANGELIST = admin_url(StrategySubscription, "changelist")


@pytest.fixture
def pair(django_capture_on_commit_callbacks):
    """The two active subscribers of one registered strategy."""
    strategy = StrategyFactory()
    with django_capture_on_commit_callbacks(execute=True):
        subscriptions = [subscribe(strategy), subscribe(strategy)]
    return strategy, subscriptions


def _act(client, capture, action, subscriptions):
    with capture(execute=True):
        return client.post(
            CHANGELIST,
            {"action": action, "_selected_action": [s.pk for s in subscriptions]},
            follow=True,
        )


def _state(strategy, subscriptions):
    strategy.refresh_from_db()
    statuses = [StrategySubscription.objects.get(pk=s.pk).status for s in subscriptions]
    return strategy.subscriber_count, is_registered(strategy), statuses


@pytest.mark.django_db
def test_pause_resume_and_cancel_actions_keep_counts_and_registry_right(
    admin_client, pair, django_capture_on_commit_callbacks
):
    strategy, (first, second) = pair
    capture = django_capture_on_commit_callbacks
    # pausing both takes the strategy off the registry
    response = _act(admin_client, capture, "pause_subscriptions", [first, second])
    assert "2 paused." in response.content.decode()
    assert _state(strategy, [first, second]) == (0, False, ["paused", "paused"])
    assert StrategySubscription.objects.get(pk=first.pk).status_reason == "paused by an operator"
    # resuming one brings it back
    _act(admin_client, capture, "resume_subscriptions", [first])
    assert _state(strategy, [first, second]) == (1, True, ["active", "paused"])
    # cancelling both (one active, one paused) leaves no subscriber
    _act(admin_client, capture, "cancel_subscriptions", [first, second])
    assert _state(strategy, [first, second]) == (0, False, ["cancelled", "cancelled"])
    # actions on cancelled subscriptions do nothing
    _act(admin_client, capture, "resume_subscriptions", [first])
    assert _state(strategy, [first, second]) == (0, False, ["cancelled", "cancelled"])


@pytest.mark.django_db
def test_a_refused_resume_is_reported_and_changes_nothing(
    admin_client, pair, django_capture_on_commit_callbacks
):
    strategy, subscriptions = pair
    with django_capture_on_commit_callbacks(execute=True):
        strategy_retire(strategy=strategy)
    response = _act(
        admin_client, django_capture_on_commit_callbacks, "resume_subscriptions", subscriptions
    )
    assert "not resumed: the strategy is not active" in response.content.decode()
    assert _state(strategy, subscriptions) == (0, False, ["paused", "paused"])


@pytest.mark.django_db
def test_sizing_is_edited_through_the_service_with_the_api_rules(admin_client, pair):
    _, (subscription, _) = pair
    url = admin_url(StrategySubscription, "change", subscription.pk)
    page = admin_client.get(url)
    # out of range: the form shows the error, nothing changes
    bad = admin_client.post(url, admin_form_data(page, risk_per_trade="0.5", leverage="1"))
    assert bad.status_code == 200
    assert "risk_per_trade" in bad.context["adminform"].form.errors
    assert StrategySubscription.objects.get(pk=subscription.pk).risk_per_trade == Decimal("0.01")
    # in range: saved; status and PnL cannot be edited here
    good = admin_client.post(
        url,
        admin_form_data(page, capital="2500", leverage="3", status="cancelled", realized_pnl="9"),
    )
    assert good.status_code == 302
    fresh = StrategySubscription.objects.get(pk=subscription.pk)
    assert (fresh.capital, fresh.leverage) == (Decimal("2500"), Decimal("3"))
    assert (fresh.status, fresh.realized_pnl) == ("active", Decimal("0"))


@pytest.mark.django_db
def test_subscriptions_are_not_added_or_deleted_by_hand(admin_client, pair):
    _, (subscription, _) = pair
    assert admin_client.get(admin_url(StrategySubscription, "add")).status_code == 403
    delete = admin_url(StrategySubscription, "delete", subscription.pk)
    assert admin_client.get(delete).status_code == 403


@pytest.mark.django_db
def test_credential_pages_show_label_exchange_and_masked_key_only(admin_client, admin_user):
    # given a credential in use by a live subscription
    credential = make_credential(admin_user, label="desk-1")
    subscription_create(
        user=admin_user,
        strategy=StrategyFactory(),
        capital=Decimal("100"),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=credential,
    )
    pages = [
        admin_client.get(admin_url(BrokerCredential, "changelist")),
        admin_client.get(admin_url(BrokerCredential, "change", credential.pk)),
        admin_client.get(admin_url(StrategySubscription, "changelist")),
    ]
    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert "desk-1" in html and "****1234" in html
        # neither the plain text nor the ciphertext is on any page
        for hidden in (
            "AKIA-plain-key-1234",
            "very-secret-value-XYZ",
            credential.api_key_encrypted,
            credential.secret_encrypted,
        ):
            assert hidden not in html
    # and credentials cannot be added, edited or deleted here
    assert admin_client.get(admin_url(BrokerCredential, "add")).status_code == 403
    change = admin_url(BrokerCredential, "change", credential.pk)
    assert admin_client.post(change, {"label": "x"}).status_code == 403
    assert admin_client.get(admin_url(BrokerCredential, "delete", credential.pk)).status_code == 403
    assert BrokerCredential.objects.get(pk=credential.pk).label == "desk-1"
