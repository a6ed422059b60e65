"""Tenant isolation: a second user tries every endpoint on the first user's objects.

Another user's subscription, credential, trade, stats or private strategy answer 404 exactly
as a missing object does (existence is not revealed); settings and code changes on someone
else's public strategy answer 403 (before any dry run, and nobody is notified). A refused
request changes nothing: the database is compared row by row, and no after-commit work
(events, registry updates) is even scheduled.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtests.models import Backtest
from notifications.models import Delivery, Notification, NotificationEvent, Webhook
from notifications.services import Notice, notifications_record, webhook_create
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import subscription_create, subscription_pause
from tests.api.helpers import (
    VALID_CODE,
    make_credential,
    make_execution,
    make_order,
    make_position,
    make_trade,
    subscribe_payload,
)
from tests.api.test_docs import OPERATIONS
from tests.factories import BacktestFactory, StrategyFactory, subscribe
from trades.models import Order, Position, ProtectionTrip, Trade

MISSING = 987_654_321
NOT_FOUND = {"detail": "Not found.", "code": "not_found", "errors": {}}

# (method, path, body, expected status) tried by the intruder on the owner's objects.
REFUSED = [
    ("get", "/api/strategies/{private}", None, 404),
    ("put", "/api/strategies/{private}/settings", {"settings": {"x": 1}}, 404),
    ("put", "/api/strategies/{public}/settings", {"settings": {"x": 1}}, 403),
    ("put", "/api/strategies/{private}/code", {"code": VALID_CODE}, 404),
    ("put", "/api/strategies/{public}/code", {"code": VALID_CODE}, 403),
    ("get", "/api/strategies/{private}/stats", None, 404),
    ("get", "/api/strategies/{private}/executions", None, 404),
    ("get", "/api/strategies/{public}/executions", None, 403),
    ("get", "/api/strategies/{private}/performance", None, 404),
    ("post", "/api/strategies/{private}/subscribe", subscribe_payload(), 404),
    ("get", "/api/strategies/subscriptions/{subscription}", None, 404),
    ("put", "/api/strategies/subscriptions/{subscription}", {"capital": "1"}, 404),
    ("delete", "/api/strategies/subscriptions/{subscription}", None, 404),
    ("delete", "/api/strategies/subscriptions/{subscription}?close_positions=true", None, 404),
    ("delete", "/api/strategies/subscriptions/{subscription}", {"close_positions": True}, 404),
    ("post", "/api/strategies/subscriptions/{subscription}/pause", None, 404),
    ("post", "/api/strategies/subscriptions/{paused}/resume", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/stats", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/equity", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/equity.png", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/equity.svg", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/trades", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/orders", None, 404),
    ("post", "/api/strategies/subscriptions/{subscription}/close", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/protection-trips", None, 404),
    ("post", "/api/strategies/subscriptions/{subscription}/resync", {"mode": "adopt"}, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/divergences", None, 404),
    ("get", "/api/strategies/subscriptions/{subscription}/divergence", None, 404),
    ("delete", "/api/credentials/{credential}", None, 404),
    # in use by a live subscription: still 404, a 409 would reveal it exists and is used
    ("delete", "/api/credentials/{used_credential}", None, 404),
    ("get", "/api/backtests/{backtest}", None, 404),
    ("get", "/api/backtests/{backtest}/chart.png", None, 404),
    ("get", "/api/backtests/{backtest}/chart.svg", None, 404),
    ("get", "/api/backtests/{backtest}/report.html", None, 404),
    ("get", "/api/webhooks/{webhook}", None, 404),
    ("delete", "/api/webhooks/{webhook}", None, 404),
    ("get", "/api/webhooks/{webhook}/deliveries", None, 404),
]


@pytest.fixture
def owner_world(them):
    """The owner (``them``): private and public strategies with executions, active, paused
    and live subscriptions with trades, orders and a position, an unused credential and one in
    use, a finished backtest, and a webhook with a delivery of a notification."""
    private = StrategyFactory(owner=them)
    public = StrategyFactory(owner=them, is_public=True)
    for strategy in (private, public):
        make_execution(strategy, status="failed", error="secret stack trace")
    subscription = subscribe(public, user=them)
    make_order(make_trade(subscription, pnl="7"))
    make_order(make_trade(subscription, status="open", pnl=None))  # a position to close
    make_position(subscription)
    ProtectionTrip.objects.create(
        subscription=subscription, protection="cooldown", action="entry_skipped", reason="cool"
    )
    paused = subscribe(StrategyFactory(owner=them, is_public=True), user=them)
    subscription_pause(subscription=paused)
    used_credential = make_credential(them, label="used")
    subscription_create(
        user=them,
        strategy=private,
        capital=Decimal("100"),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=used_credential,
    )
    webhook, _ = webhook_create(user=them, url="https://them.example/hook", events=["trade.filled"])
    fill = Notice(user_id=them.pk, event=NotificationEvent.TRADE_FILLED, key="trade.filled:1")
    notifications_record(notices=[fill])
    return {
        "webhook": webhook.pk,
        "private": private.pk,
        "public": public.pk,
        "subscription": subscription.pk,
        "paused": paused.pk,
        "credential": make_credential(them, label="spare").pk,
        "used_credential": used_credential.pk,
        "backtest": BacktestFactory(owner=them, status="done").pk,
    }


def snapshot() -> dict[str, list[dict]]:
    models = (
        Strategy,
        StrategyVersion,
        StrategySubscription,
        BrokerCredential,
        StrategyExecution,
        Trade,
        Order,
        Position,
        ProtectionTrip,
        Backtest,
        Notification,
        Webhook,
        Delivery,
    )
    return {m.__name__: list(m.objects.order_by("pk").values()) for m in models}


def _call(client, method, path, body):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "template", "body", "expected"), REFUSED)
def test_another_users_objects_are_refused_and_nothing_changes(
    api, owner_world, django_capture_on_commit_callbacks, method, template, body, expected
):
    # given the owner's objects, as they are
    before = snapshot()
    path = template.format(**owner_world)
    # when I try the endpoint on them
    with django_capture_on_commit_callbacks() as scheduled:
        response = _call(api, method, path, body)
    # then it is refused, exactly like a missing object for a 404
    assert response.status_code == expected, response.content
    if expected == 404:
        assert response.json() == NOT_FOUND
        missing = _call(api, method, template.format_map({k: MISSING for k in owner_world}), body)
        assert (missing.status_code, missing.json()) == (404, NOT_FOUND)
    else:
        assert response.json()["code"] == "permission_denied"
    # and nothing changed, nothing was scheduled to happen after a commit
    assert snapshot() == before
    assert scheduled == []


@pytest.mark.django_db
def test_another_users_credential_cannot_back_my_subscription(api, owner_world):
    before = snapshot()
    payload = subscribe_payload(mode="live", credential_id=owner_world["credential"])
    response = api.post(
        f"/api/strategies/{owner_world['public']}/subscribe", payload, format="json"
    )
    # the same answer as for a credential that does not exist
    assert response.status_code == 400
    assert response.json()["errors"] == {"credential_id": ["unknown credential"]}
    assert snapshot() == before


@pytest.mark.django_db
def test_listings_hold_nothing_of_another_user(api, owner_world):
    strategies = api.get("/api/strategies").json()["results"]
    # only the owner's public strategies are visible, without their code
    public = set(Strategy.objects.filter(is_public=True).values_list("pk", flat=True))
    assert {s["id"] for s in strategies} == public and owner_world["public"] in public
    assert owner_world["private"] not in {s["id"] for s in strategies}
    assert all(s["code"] is None for s in strategies)
    assert api.get("/api/strategies/subscriptions").json()["count"] == 0
    assert api.get("/api/credentials").json()["count"] == 0
    assert api.get("/api/backtests").json()["count"] == 0
    assert api.get("/api/webhooks").json()["count"] == 0
    assert api.get("/api/notifications").json()["count"] == 0
    assert api.get("/api/strategies?mine=true").json()["count"] == 0


@pytest.mark.django_db
def test_a_public_strategy_is_readable_but_its_code_is_not(api, owner_world):
    detail = api.get(f"/api/strategies/{owner_world['public']}")
    stats = api.get(f"/api/strategies/{owner_world['public']}/stats")
    assert detail.status_code == 200 and detail.json()["code"] is None
    assert detail.json()["is_owner"] is False
    # aggregates only: no execution errors, no subscriber names
    assert stats.status_code == 200 and "secret stack trace" not in stats.content.decode()


def test_the_table_tries_every_endpoint_that_takes_an_id():
    tried = {(method, _as_schema_path(template)) for method, template, _, _ in REFUSED}
    with_ids = {
        (m, path) for path, methods in OPERATIONS.items() if "{id}" in path for m in methods
    }
    assert tried == with_ids


def _as_schema_path(template: str) -> str:
    template = template.split("?")[0]
    names = ("private", "public", "subscription", "paused", "credential", "used_credential")
    for name in (*names, "backtest", "webhook"):
        template = template.replace("{" + name + "}", "{id}")
    return template
