"""Reconciliation with the exchange (the simulator, through real ccxt): what the platform holds
against what the account holds, divergences recorded while they last, and resync both ways."""

from __future__ import annotations

from decimal import Decimal

import pytest

from notifications.models import Notification, NotificationEvent
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create
from tests.factories import StrategyFactory
from tests.trades.live import Trader, credential_of, live_trader
from tests.trades.test_live_orders import run_close
from trades.custody import credential_batches
from trades.models import Divergence, Position
from trades.reconcile import reconcile_credentials

pytestmark = pytest.mark.django_db(transaction=True)


def _reconcile(*traders: Trader):
    ids = sorted({t.subscription.credential_id for t in traders})
    return reconcile_credentials(credential_ids=ids)


def _entered(sim, market, **fields) -> tuple[Trader, Decimal]:
    """A live subscriber holding the position one LONG signal opened; its quantity."""
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy, **fields)
    run_close(sim, strategy, market[10])
    position = Position.objects.get(subscription=trader.subscription)
    assert position.quantity > 0
    return trader, position.quantity


def _open(trader: Trader) -> list[Divergence]:
    return list(
        Divergence.objects.filter(subscription=trader.subscription, status="open").order_by("pk")
    )


def test_a_balance_changed_behind_the_platforms_back_is_reported_kept_and_resolved(sim, market):
    # given a live subscriber whose account holds exactly the position the platform holds
    trader, held = _entered(sim, market)
    assert _reconcile(trader).opened == 0 and _open(trader) == []
    # when part of it is sold behind the platform's back
    sim.account_edit(trader.api_key, balances={"ETH": str(held / 2)})
    outcome = _reconcile(trader)
    # then one run reports it: expected, actual, since when; and the subscriber is told
    assert outcome.opened == 1
    (divergence,) = _open(trader)
    assert (divergence.kind, divergence.subject) == ("balance", "ETH")
    assert (divergence.expected, divergence.actual) == (held, held / 2)
    assert divergence.difference == -held / 2
    notice = Notification.objects.get(event=NotificationEvent.DIVERGENCE_FOUND)
    assert notice.user_id == trader.subscription.user_id
    assert notice.payload["expected"] == str(held) and notice.payload["kind"] == "balance"
    # when it persists and changes: the same divergence is updated, not duplicated
    sim.account_edit(trader.api_key, balances={"ETH": str(held / 4)})
    assert _reconcile(trader).updated == 1
    (again,) = _open(trader)
    assert again.pk == divergence.pk and again.actual == held / 4
    assert again.first_seen_at == divergence.first_seen_at
    assert again.last_seen_at > divergence.last_seen_at
    assert Notification.objects.filter(event=NotificationEvent.DIVERGENCE_FOUND).count() == 1
    # when the account holds the position again, the divergence is closed
    sim.account_edit(trader.api_key, balances={"ETH": str(held)})
    assert _reconcile(trader).resolved == 1
    divergence.refresh_from_db()
    assert divergence.status == "resolved" and divergence.resolved_at is not None


def test_an_unknown_order_with_our_prefix_is_reported_and_a_manual_one_shown(sim, market):
    # given a live subscriber, and on its account two resting orders the platform never sent:
    # one carrying the platform's client order id prefix, one the user's own
    trader, _ = _entered(sim, market)
    ours = f"sf-999999-{trader.subscription.pk}-e"
    for client_order_id in (ours, "my-own-order"):
        sim.order_place(
            trader.api_key,
            symbol="ETH/BTC",
            side="BUY",
            type="LIMIT",
            quantity="0.1",
            price="0.01",
            client_order_id=client_order_id,
        )
    # when the account is reconciled
    _reconcile(trader)
    # then the unknown one is reported (and notified), the manual one shown only
    found = {d.kind: d for d in _open(trader)}
    assert set(found) == {"unknown_order", "manual_order"}
    assert found["unknown_order"].subject == ours
    assert found["unknown_order"].actual == Decimal("0.1")
    assert found["manual_order"].detail["client_order_id"] == "my-own-order"
    notices = Notification.objects.filter(event=NotificationEvent.DIVERGENCE_FOUND)
    assert [n.payload["kind"] for n in notices] == ["unknown_order"]
    # and nothing was adopted: the platform's orders are only its own
    assert not trader.subscription.orders.filter(client_order_id=ours).exists()


def test_subscriptions_sharing_a_credential_and_a_market_are_compared_by_their_sum(sim, market):
    # given one account with two subscriptions on the same market, both holding a position
    trader, first_qty = _entered(sim, market)
    other = StrategyFactory(settings={"signal": "LONG"}, symbol="ETH/BTC")
    second = subscription_create(
        user=trader.subscription.user,
        strategy=other,
        capital=Decimal("2"),
        risk_per_trade=Decimal("0.01"),
        leverage=Decimal("1"),
        mode=StrategySubscription.Mode.LIVE,
        credential=credential_of(trader),
    )
    run_close(sim, other, market[11])
    second_qty = Position.objects.get(subscription=second).quantity
    # then the account holding their sum is no divergence
    assert _reconcile(trader).opened == 0
    # when the account holds less than the sum
    sim.account_edit(trader.api_key, balances={"ETH": str(first_qty)})
    _reconcile(trader)
    # then the difference is on each of them, with the sum as expected and the other named
    rows = Divergence.objects.filter(status="open").order_by("subscription_id")
    assert [r.subscription_id for r in rows] == sorted([trader.subscription.pk, second.pk])
    for row in rows:
        assert (row.expected, row.actual) == (first_qty + second_qty, first_qty)
        assert len(row.detail["shared_with"]) == 1


def test_batches_cover_every_live_credential_once(sim, market):
    # given live subscribers
    strategy = StrategyFactory()
    traders = [live_trader(sim, strategy) for _ in range(5)]
    # then the batches hold each of their credentials once
    batches = credential_batches(size=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(i for b in batches for i in b) == sorted(
        t.subscription.credential_id for t in traders
    )


def _resync(trader: Trader, mode: str):
    from tests.api.helpers import client_for

    api = client_for(trader.subscription.user)
    url = f"/api/strategies/subscriptions/{trader.subscription.pk}/resync"
    return api.post(url, {"mode": mode}, format="json")


def test_resync_adopts_the_exchanges_quantity_then_closes_a_surplus_by_an_order(sim, market):
    # given a live position whose account lost part of it behind the platform's back
    trader, held = _entered(sim, market)
    sim.account_edit(trader.api_key, balances={"ETH": str(held / 2)})
    _reconcile(trader)
    # when the subscriber adopts the exchange's quantity
    response = _resync(trader, "adopt")
    # then the position is the exchange's, the divergence resolved with who asked
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["resync_mode"]) == ("resolved", "adopt")
    assert body["resync_by"] == trader.subscription.user.username
    assert Position.objects.get(subscription=trader.subscription).quantity == held / 2
    assert _reconcile(trader).opened == 0
    # when the account then holds more than the platform
    sim.account_edit(trader.api_key, balances={"ETH": str(held)})
    _reconcile(trader)
    # and the subscriber closes the difference
    response = _resync(trader, "close")
    # then one market order sold the surplus, under the resync's own client order id
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["resync_mode"]) == ("resolved", "close")
    (sold,) = [o for o in sim.orders() if o["client_order_id"].endswith(f"-r{body['id']}")]
    assert (sold["side"], Decimal(sold["quantity"]), sold["status"]) == ("SELL", held / 2, "FILLED")
    assert Position.objects.get(subscription=trader.subscription).quantity == held / 2
    assert _reconcile(trader).opened == 0
    # and asking again sends nothing more: nothing is left to resync
    assert _resync(trader, "close").status_code == 409
    assert len([o for o in sim.orders() if "-r" in o["client_order_id"]]) == 1


def test_reconciling_many_credentials_keeps_to_the_shared_rate_limits(sim, market, settings):
    # given 30 live subscribers and an exchange rate of 20 requests a second for everyone
    settings.EXCHANGE_RATE_PER_EXCHANGE = 20.0
    strategy = StrategyFactory()
    traders = [live_trader(sim, strategy) for _ in range(30)]
    before = sim.request_rates()["requests"]
    # when they are all reconciled at once
    outcome = _reconcile(*traders)
    # then each account was read (its balance and its market's open orders)
    assert (outcome.credentials, outcome.failed, outcome.requests) == (30, 0, 60)
    # and the exchange never saw more in one second than the limiter's burst plus its rate
    # (the credential checks of the setup, just before, are not the reconcile's)
    rates = sim.request_rates(since=before)
    assert rates["requests"] - before >= 60
    assert rates["peak_per_window"] <= 20 + 20
    assert rates["peak_per_key_per_window"] <= settings.EXCHANGE_RATE_PER_CREDENTIAL * 2


@pytest.mark.django_db
def test_a_derivatives_position_is_compared_signed_with_the_exchanges():
    # given a short of 0.5 on a swap market, as the platform holds it
    from django.utils import timezone

    from tests.api.helpers import make_position
    from tests.factories import subscribe
    from trades.brokers.account import AccountSnapshot, _positions
    from trades.reconcile import _Account, account_compare

    strategy = StrategyFactory(symbol="BTC/USDT:USDT")
    subscription = subscribe(strategy)
    make_position(subscription, symbol=strategy.symbol, side="short", quantity=Decimal("0.5"))
    account = _Account(
        credential=None,  # type: ignore[arg-type]  # not read by the comparison
        subs=[subscription],
        positions={subscription.pk: Decimal("-0.5")},
        busy=set(),
        open_orders=[],
    )
    # when the exchange reports 3 contracts of 0.1 short (ccxt's unified positions)
    rows = [{"symbol": strategy.symbol, "contracts": 3, "contractSize": 0.1, "side": "short"}]
    snapshot = AccountSnapshot(positions=_positions(rows))
    findings, held_back = account_compare(account, snapshot, now=timezone.now())
    # then the difference is one signed position divergence
    (finding,) = findings
    assert (finding.kind, finding.subject) == ("position", strategy.symbol)
    assert (finding.expected, finding.actual) == (Decimal("-0.5"), Decimal("-0.3"))
    assert held_back == set()
