from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from strategies.models import Strategy
from subscriptions.models import PROTECTION_FIELDS, EquityPoint, StrategySubscription
from subscriptions.services import strategy_retire, subscription_cancel, subscription_pause
from tests.api.helpers import (
    field_errors,
    is_registered,
    make_credential,
    make_trade,
    subscribe_payload,
)
from tests.factories import StrategyFactory, subscribe

SUBSCRIPTION_FIELDS = {
    "id",
    "strategy_id",
    "strategy_name",
    "mode",
    "capital",
    "risk_per_trade",
    "leverage",
    "credential_id",
    "settings",
    "min_order_policy",
    "join_policy",
    "entry_order_type",
    "margin_mode",
    *PROTECTION_FIELDS,
    "status",
    "status_reason",
    "realized_pnl",
    "fees_paid",
    "created_at",
    "updated_at",
    "cancelled_at",
}


@pytest.fixture
def strategy(them):
    """Someone else's public strategy on binance."""
    return StrategyFactory(owner=them, is_public=True)


def _count(strategy: Strategy) -> int:
    strategy.refresh_from_db()
    return strategy.subscriber_count


# --- subscribe ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_paper_subscription_counts_and_registers_the_strategy(
    api, me, strategy, django_capture_on_commit_callbacks
):
    # when I subscribe in paper mode
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/strategies/{strategy.pk}/subscribe",
            subscribe_payload(leverage="3", settings={"note": "x"}),
            format="json",
        )
    # then the subscription exists as asked, the count is exact, and the strategy runs
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == SUBSCRIPTION_FIELDS
    assert body["strategy_id"] == strategy.pk and body["status"] == "active"
    assert (body["mode"], body["credential_id"], body["settings"]) == ("paper", None, {"note": "x"})
    subscription = StrategySubscription.objects.get(pk=body["id"])
    assert subscription.user == me
    assert (subscription.capital, subscription.risk_per_trade, subscription.leverage) == (
        Decimal("1000"),
        Decimal("0.01"),
        Decimal("3"),
    )
    assert _count(strategy) == 1 and is_registered(strategy)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("capital", "risk", "leverage"),
    [("2500.5", "0.05", "2"), (2500.5, 0.05, 2), ("2500.5", 0.05, "2.00"), (2500, "0.1", 20)],
)
def test_decimals_are_accepted_as_strings_or_numbers(api, strategy, capital, risk, leverage):
    payload = subscribe_payload(capital=capital, risk_per_trade=risk, leverage=leverage)
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 201, response.content
    subscription = StrategySubscription.objects.get()
    assert subscription.capital == Decimal(str(capital))
    assert subscription.risk_per_trade == Decimal(str(risk))
    assert subscription.leverage == Decimal(str(leverage))
    # and come back as exact strings
    assert Decimal(response.json()["capital"]) == Decimal(str(capital))


@pytest.mark.django_db
def test_leverage_defaults_to_one(api, strategy):
    response = api.post(
        f"/api/strategies/{strategy.pk}/subscribe", subscribe_payload(), format="json"
    )
    assert response.status_code == 201 and Decimal(response.json()["leverage"]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"capital": "0"}, "capital"),
        ({"capital": -5}, "capital"),
        ({"capital": "abc"}, "capital"),
        ({"capital": "1e3"}, "capital"),
        ({"capital": "NaN"}, "capital"),
        ({"capital": True}, "capital"),
        ({"capital": "1" * 20}, "capital"),
        ({"capital": "1000000000000.01"}, "capital"),
        ({"capital": "1.123456789"}, "capital"),
        ({"risk_per_trade": "0"}, "risk_per_trade"),
        ({"risk_per_trade": "0.11"}, "risk_per_trade"),
        ({"risk_per_trade": 1}, "risk_per_trade"),
        ({"risk_per_trade": "-0.01"}, "risk_per_trade"),
        ({"leverage": "0.5"}, "leverage"),
        ({"leverage": 21}, "leverage"),
        ({"leverage": "1.001"}, "leverage"),
        ({"mode": "demo"}, "mode"),
        ({"credential_id": "1"}, "credential_id"),
        ({"credential_id": 0}, "credential_id"),
        ({"settings": [1]}, "settings"),
        ({"status": "active"}, "status"),
    ],
)
def test_subscribe_validation_errors_write_nothing(api, strategy, override, field):
    payload = subscribe_payload(**override)
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 400
    assert field in field_errors(response)
    assert not StrategySubscription.objects.exists() and _count(strategy) == 0


@pytest.mark.django_db
def test_missing_required_fields(api, strategy):
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", {}, format="json")
    assert response.status_code == 400
    assert set(field_errors(response)) == {"capital", "risk_per_trade"}


@pytest.mark.django_db
def test_leverage_maximum_is_configurable(api, strategy, settings):
    settings.MAX_LEVERAGE = 5
    payload = subscribe_payload(leverage="6")
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 400
    assert "between 1 and 5" in field_errors(response)["leverage"][0]


@pytest.mark.django_db
def test_subscribing_twice_is_a_400_with_a_clear_message(api, strategy):
    url = f"/api/strategies/{strategy.pk}/subscribe"
    assert api.post(url, subscribe_payload(), format="json").status_code == 201
    again = api.post(url, subscribe_payload(capital="5"), format="json")
    assert again.status_code == 400
    assert field_errors(again) == {"strategy": ["you are already subscribed to this strategy"]}
    assert StrategySubscription.objects.count() == 1 and _count(strategy) == 1


@pytest.mark.django_db
def test_subscribing_again_after_a_cancel_is_allowed(api, me, strategy):
    subscription_cancel(subscription=subscribe(strategy, user=me))
    url = f"/api/strategies/{strategy.pk}/subscribe"
    assert api.post(url, subscribe_payload(), format="json").status_code == 201
    assert _count(strategy) == 1


@pytest.mark.django_db
def test_a_paused_subscription_still_counts_as_subscribed(api, me, strategy):
    subscription_pause(subscription=subscribe(strategy, user=me))
    response = api.post(
        f"/api/strategies/{strategy.pk}/subscribe", subscribe_payload(), format="json"
    )
    assert response.status_code == 400


@pytest.mark.django_db
def test_live_subscription_with_my_credential_for_the_exchange(api, me, strategy):
    credential = make_credential(me)
    payload = subscribe_payload(mode="live", credential_id=credential.pk)
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["mode"] == "live" and response.json()["credential_id"] == credential.pk
    assert StrategySubscription.objects.get().credential == credential


@pytest.mark.django_db
def test_live_subscription_credential_rules(api, me, them, strategy):
    url = f"/api/strategies/{strategy.pk}/subscribe"
    mine_kraken = make_credential(me, exchange="kraken", label="kraken")
    theirs = make_credential(them)
    mine = make_credential(me)
    cases = [
        (subscribe_payload(mode="live"), "needs one of your credentials"),
        (subscribe_payload(mode="live", credential_id=None), "needs one of your credentials"),
        (subscribe_payload(mode="live", credential_id=theirs.pk), "unknown credential"),
        (subscribe_payload(mode="live", credential_id=987654), "unknown credential"),
        (subscribe_payload(mode="live", credential_id=mine_kraken.pk), "credential is for kraken"),
        (subscribe_payload(mode="paper", credential_id=mine.pk), "without a credential"),
    ]
    for payload, message in cases:
        response = api.post(url, payload, format="json")
        assert response.status_code == 400, payload
        assert message in field_errors(response)["credential_id"][0], payload
    # someone else's credential and a missing one answer alike: nothing is revealed
    assert not StrategySubscription.objects.exists()


@pytest.mark.django_db
def test_subscribe_to_an_unknown_private_or_retired_strategy(api, them):
    private = StrategyFactory(owner=them)
    retired = StrategyFactory(owner=them, is_public=True)
    strategy_retire(strategy=retired)
    assert (
        api.post(
            f"/api/strategies/{private.pk}/subscribe", subscribe_payload(), format="json"
        ).status_code
        == 404
    )
    assert (
        api.post("/api/strategies/987654/subscribe", subscribe_payload(), format="json").status_code
        == 404
    )
    response = api.post(
        f"/api/strategies/{retired.pk}/subscribe", subscribe_payload(), format="json"
    )
    assert response.status_code == 400 and "retired" in field_errors(response)["strategy"][0]


@pytest.mark.django_db
def test_owners_may_subscribe_to_their_own_private_strategy(api, me):
    strategy = StrategyFactory(owner=me)
    response = api.post(
        f"/api/strategies/{strategy.pk}/subscribe", subscribe_payload(), format="json"
    )
    assert response.status_code == 201


# --- list and detail ------------------------------------------------------------------------
@pytest.fixture
def mine(me, them, strategy):
    """Three of my subscriptions (active, paused, cancelled), and one of theirs."""
    other = StrategyFactory(owner=them, is_public=True)
    third = StrategyFactory(owner=them, is_public=True)
    active = subscribe(strategy, user=me, capital="1000")
    paused = subscribe(other, user=me, capital="3000")
    subscription_pause(subscription=paused)
    cancelled = subscription_cancel(subscription=subscribe(third, user=me, capital="2000"))
    subscribe(strategy, user=them)
    return {"active": active, "paused": paused, "cancelled": cancelled}


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


@pytest.mark.django_db
def test_list_is_mine_only_with_filters_ordering_and_pages(api, mine):
    assert sorted(_ids(api.get("/api/strategies/subscriptions"))) == sorted(
        s.pk for s in mine.values()
    )
    assert _ids(api.get("/api/strategies/subscriptions?status=paused")) == [mine["paused"].pk]
    assert _ids(api.get("/api/strategies/subscriptions?mode=live")) == []
    by_strategy = api.get(f"/api/strategies/subscriptions?strategy={mine['active'].strategy_id}")
    assert _ids(by_strategy) == [mine["active"].pk]
    by_capital = _ids(api.get("/api/strategies/subscriptions?ordering=-capital"))
    assert by_capital == [mine["paused"].pk, mine["cancelled"].pk, mine["active"].pk]
    page = api.get("/api/strategies/subscriptions?ordering=capital&page_size=2&page=2")
    assert _ids(page) == [mine["paused"].pk]
    assert api.get("/api/strategies/subscriptions?status=gone").status_code == 400


@pytest.mark.django_db
def test_detail(api, mine):
    response = api.get(f"/api/strategies/subscriptions/{mine['paused'].pk}")
    assert response.status_code == 200
    assert response.json()["status"] == "paused" and set(response.json()) == SUBSCRIPTION_FIELDS


@pytest.mark.django_db
def test_put_changes_the_sizing_and_keeps_what_is_left_out(api, mine):
    subscription = mine["active"]
    response = api.put(
        f"/api/strategies/subscriptions/{subscription.pk}",
        {"capital": 1500, "leverage": "4", "settings": {"max_open": 1}},
        format="json",
    )
    assert response.status_code == 200, response.content
    subscription.refresh_from_db()
    assert subscription.capital == Decimal("1500") and subscription.leverage == Decimal("4")
    assert subscription.risk_per_trade == Decimal("0.01")  # untouched
    assert subscription.settings == {"max_open": 1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"risk_per_trade": "0.5"},
        {"capital": 0},
        {"leverage": 100},
        {"mode": "live"},
        {"strategy_id": 1},
        {"settings": "x"},
    ],
)
def test_put_validation_errors_change_nothing(api, mine, body):
    subscription = mine["active"]
    response = api.put(f"/api/strategies/subscriptions/{subscription.pk}", body, format="json")
    assert response.status_code == 400 and set(body) <= set(field_errors(response))
    fresh = StrategySubscription.objects.get(pk=subscription.pk)
    assert (fresh.capital, fresh.risk_per_trade, fresh.leverage, fresh.mode) == (
        subscription.capital,
        subscription.risk_per_trade,
        subscription.leverage,
        subscription.mode,
    )


# --- live-trading policies -----------------------------------------------------------------

POLICIES = ("min_order_policy", "join_policy", "entry_order_type", "margin_mode")
DEFAULT_POLICIES = {
    "min_order_policy": "skip",
    "join_policy": "next_signal",
    "entry_order_type": "market",
    "margin_mode": "",
}
CHOSEN_POLICIES = {
    "min_order_policy": "bump_to_minimum",
    "join_policy": "join_now",
    "entry_order_type": "limit",
    "margin_mode": "isolated",
}


def _policies(subscription: StrategySubscription) -> dict[str, str]:
    return {name: getattr(subscription, name) for name in POLICIES}


@pytest.mark.django_db
def test_subscribe_without_policies_takes_the_models_defaults(api, strategy):
    payload = subscribe_payload()
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 201, response.content
    assert {name: response.json()[name] for name in POLICIES} == DEFAULT_POLICIES
    stored = StrategySubscription.objects.get(pk=response.json()["id"])
    assert _policies(stored) == DEFAULT_POLICIES


@pytest.mark.django_db
def test_subscribe_with_policies_stores_and_returns_them(api, strategy):
    payload = subscribe_payload(**CHOSEN_POLICIES)
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 201, response.content
    assert {name: response.json()[name] for name in POLICIES} == CHOSEN_POLICIES
    assert _policies(StrategySubscription.objects.get(pk=response.json()["id"])) == CHOSEN_POLICIES


@pytest.mark.django_db
@pytest.mark.parametrize(
    "override",
    [
        {"min_order_policy": "round_up"},
        {"join_policy": "now"},
        {"entry_order_type": "stop"},
        {"margin_mode": "portfolio"},
        {"min_order_policy": ""},  # only margin_mode may be blank
        {"join_policy": None},
        {"entry_order_type": 1},
        {"margin_mode": ["cross"]},
    ],
)
def test_subscribe_with_an_unknown_policy_is_a_400_and_writes_nothing(api, strategy, override):
    payload = subscribe_payload(**override)
    response = api.post(f"/api/strategies/{strategy.pk}/subscribe", payload, format="json")
    assert response.status_code == 400
    assert set(field_errors(response)) == set(override)
    assert not StrategySubscription.objects.filter(strategy=strategy).exists()


@pytest.mark.django_db
def test_put_changes_policies_and_keeps_what_is_left_out(api, mine):
    subscription = mine["active"]
    url = f"/api/strategies/subscriptions/{subscription.pk}"
    response = api.put(url, {"join_policy": "join_now", "margin_mode": "cross"}, format="json")
    assert response.status_code == 200, response.content
    expected = {**DEFAULT_POLICIES, "join_policy": "join_now", "margin_mode": "cross"}
    assert {name: response.json()[name] for name in POLICIES} == expected
    subscription.refresh_from_db()
    assert _policies(subscription) == expected
    assert subscription.capital == Decimal("1000")  # sizing untouched
    # a blank margin mode goes back to the account's own setting
    response = api.put(url, {"margin_mode": ""}, format="json")
    assert response.status_code == 200 and response.json()["margin_mode"] == ""
    subscription.refresh_from_db()
    assert subscription.margin_mode == "" and subscription.join_policy == "join_now"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"min_order_policy": "bump"},
        {"join_policy": "later"},
        {"entry_order_type": "market", "margin_mode": "both"},
        {"entry_order_type": None},
    ],
)
def test_put_with_an_unknown_policy_changes_nothing(api, mine, body):
    subscription = mine["active"]
    response = api.put(f"/api/strategies/subscriptions/{subscription.pk}", body, format="json")
    assert response.status_code == 400
    assert set(field_errors(response)) <= set(body) and field_errors(response)
    assert _policies(StrategySubscription.objects.get(pk=subscription.pk)) == DEFAULT_POLICIES


@pytest.mark.django_db
def test_the_service_refuses_an_unknown_policy_too(me, strategy):
    from django.core.exceptions import ValidationError

    from subscriptions.services import subscription_create, subscription_update_settings

    with pytest.raises(ValidationError) as refused:
        subscription_create(
            user=me,
            strategy=strategy,
            capital=Decimal("100"),
            risk_per_trade=Decimal("0.01"),
            join_policy="whenever",
        )
    assert set(refused.value.message_dict) == {"join_policy"}
    subscription = subscribe(strategy, user=me)
    with pytest.raises(ValidationError) as refused:
        subscription_update_settings(subscription=subscription, margin_mode="portfolio")
    assert set(refused.value.message_dict) == {"margin_mode"}
    assert _policies(StrategySubscription.objects.get(pk=subscription.pk)) == DEFAULT_POLICIES


@pytest.mark.django_db
def test_a_cancelled_subscription_cannot_be_changed_paused_resumed_or_cancelled(api, mine):
    pk = mine["cancelled"].pk
    answers = [
        api.put(f"/api/strategies/subscriptions/{pk}", {"capital": 5}, format="json"),
        api.post(f"/api/strategies/subscriptions/{pk}/pause"),
        api.post(f"/api/strategies/subscriptions/{pk}/resume"),
        api.delete(f"/api/strategies/subscriptions/{pk}"),
    ]
    for answer in answers:
        assert answer.status_code == 400
        assert field_errors(answer) == {"status": ["subscription is cancelled"]}
    assert StrategySubscription.objects.get(pk=pk).capital == Decimal("2000")


# --- lifecycle ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_pause_resume_and_cancel_keep_the_count_and_the_registry_right(
    api, me, strategy, django_capture_on_commit_callbacks
):
    # given my subscription, the strategy's only one
    with django_capture_on_commit_callbacks(execute=True):
        subscription = subscribe(strategy, user=me)
    url = f"/api/strategies/subscriptions/{subscription.pk}"
    assert is_registered(strategy)

    # when I pause it, the strategy stops running
    with django_capture_on_commit_callbacks(execute=True):
        paused = api.post(f"{url}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert paused.json()["status_reason"] == "paused by user"
    assert _count(strategy) == 0 and not is_registered(strategy)

    # when I resume it, it runs again
    with django_capture_on_commit_callbacks(execute=True):
        resumed = api.post(f"{url}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert _count(strategy) == 1 and is_registered(strategy)

    # when I cancel it (DELETE), it is kept as cancelled and the strategy stops
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = api.delete(url)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_at"]
    assert _count(strategy) == 0 and not is_registered(strategy)
    assert StrategySubscription.objects.get(pk=subscription.pk).status == "cancelled"


@pytest.mark.django_db
def test_resume_is_refused_while_the_strategy_is_retired(api, me, strategy):
    subscription = subscribe(strategy, user=me)
    strategy_retire(strategy=strategy)
    response = api.post(f"/api/strategies/subscriptions/{subscription.pk}/resume")
    assert response.status_code == 400 and "not active" in field_errors(response)["status"][0]
    assert StrategySubscription.objects.get(pk=subscription.pk).status == "paused"


# --- stats ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_stats_of_a_subscription(api, me, strategy):
    # given closed trades +30, -10, +5 and an open one, on 1000 of capital
    subscription = subscribe(strategy, user=me, capital="1000")
    for pnl in ("30", "-10", "5"):
        make_trade(subscription, pnl=pnl)
    make_trade(subscription, status="failed", pnl=None, error="insufficient funds")
    open_trade = make_trade(subscription, status="open", pnl=None, stop_loss=Decimal("0.04"))
    StrategySubscription.objects.filter(pk=subscription.pk).update(
        realized_pnl=Decimal("25"), fees_paid=Decimal("0.6")
    )
    # and its stored equity after each close: 1030, 1020, 1025
    start = EquityPoint.objects.get(subscription=subscription).time
    for minutes, pnl in ((5, "30"), (10, "20"), (15, "25")):
        EquityPoint.objects.create(
            subscription=subscription,
            time=start + timedelta(minutes=minutes),
            kind="fill",
            equity=Decimal("1000") + Decimal(pnl),
            capital=Decimal("1000"),
            realized=Decimal(pnl),
            unrealized=Decimal("0"),
            fees=Decimal("0"),
        )
    # when I ask for its stats
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/stats")
    # then every figure is right
    assert response.status_code == 200, response.content
    stats = response.json()
    assert stats["trades"] == 4  # open and closed; the failed one never reached the market
    assert (stats["closed_trades"], stats["wins"], stats["losses"]) == (3, 2, 1)
    assert stats["win_rate"] == pytest.approx(2 / 3)
    assert Decimal(stats["realized_pnl"]) == Decimal("25")
    assert Decimal(stats["fees"]) == Decimal("0.6")
    assert stats["currency"] == "BTC"  # ETH/BTC: money is counted in the quote
    assert stats["return_pct"] == pytest.approx(2.5)  # percent: 25 on 1000
    assert Decimal(stats["equity"]) == Decimal("1025")
    assert Decimal(stats["max_drawdown"]) == Decimal("10")  # 1030 → 1020
    assert stats["max_drawdown_pct"] == pytest.approx(100 * 10 / 1030)  # percent of the peak
    position = stats["open_position"]
    assert position["trade_id"] == open_trade.pk and position["side"] == "long"
    assert Decimal(position["quantity"]) == 2 and Decimal(position["stop_loss"]) == Decimal("0.04")


@pytest.mark.django_db
def test_stats_without_trades(api, me, strategy):
    subscription = subscribe(strategy, user=me)
    stats = api.get(f"/api/strategies/subscriptions/{subscription.pk}/stats").json()
    assert stats["trades"] == 0 and stats["win_rate"] is None and stats["open_position"] is None
