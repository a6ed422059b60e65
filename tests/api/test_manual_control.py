"""A follower's protections and manual control over the API: set and changed with the
subscription, checked as input, closing a position now, cancelling with or without it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings as django_settings

from subscriptions.models import StrategySubscription
from tests.api.helpers import field_errors, make_position, make_trade, subscribe_payload
from tests.factories import StrategyFactory, subscribe
from trades.models import Order, ProtectionTrip, Trade

pytestmark = pytest.mark.django_db

PROTECTIONS = {
    "max_drawdown_pct": "15",
    "close_on_max_drawdown": True,
    "daily_loss_limit_pct": "2.5",
    "max_order_notional": "250",
    "max_open_trades": 3,
    "cooldown_after_losses": 3,
    "cooldown_minutes": 240,
    "slippage_cap_bps": 30,
}


def _url(subscription: StrategySubscription, tail: str = "") -> str:
    return f"/api/strategies/subscriptions/{subscription.pk}{tail}"


def _holding(user) -> tuple[StrategySubscription, Trade]:
    """A paper subscription of ``user`` holding a long of 2 at 0.05, last valued at 0.06."""
    subscription = subscribe(StrategyFactory(is_public=True), user=user)
    trade = make_trade(subscription, status="open", pnl=None)
    make_position(subscription, realized_pnl=Decimal(0), mark_price=Decimal("0.06"))
    return subscription, trade


def test_protections_are_set_on_subscribe_changed_and_turned_off_on_update(api, them):
    # given a strategy to follow
    strategy = StrategyFactory(owner=them, is_public=True)

    # when I subscribe with every protection
    created = api.post(
        f"/api/strategies/{strategy.pk}/subscribe",
        subscribe_payload(**PROTECTIONS),
        format="json",
    )

    # then they are stored and shown as given (decimals as exact strings)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["max_drawdown_pct"] == "15.00" and body["daily_loss_limit_pct"] == "2.50"
    assert body["max_order_notional"] == "250.00000000" and body["close_on_max_drawdown"] is True
    assert (body["max_open_trades"], body["cooldown_minutes"], body["slippage_cap_bps"]) == (
        3,
        240,
        30,
    )

    # when I turn the slippage cap off, the cooldown off, and change the maximum open trades
    subscription = StrategySubscription.objects.get(pk=body["id"])
    changed = api.put(
        _url(subscription),
        {
            "slippage_cap_bps": None,
            "cooldown_after_losses": None,
            "cooldown_minutes": None,
            "max_open_trades": 1,
        },
        format="json",
    )

    # then those changed and what was left out kept its value
    assert changed.status_code == 200, changed.content
    subscription.refresh_from_db()
    assert subscription.slippage_cap_bps is None and subscription.cooldown_minutes is None
    assert subscription.max_open_trades == 1
    assert subscription.max_drawdown_pct == Decimal("15") and subscription.close_on_max_drawdown
    # a subscription without protections has them all off
    plain = api.post(
        f"/api/strategies/{StrategyFactory(owner=them, is_public=True).pk}/subscribe",
        subscribe_payload(),
        format="json",
    ).json()
    assert plain["max_drawdown_pct"] is None and plain["close_on_max_drawdown"] is False
    assert plain["slippage_cap_bps"] is None


BAD = [
    ({"max_drawdown_pct": "0"}, "max_drawdown_pct"),
    ({"max_drawdown_pct": "-5"}, "max_drawdown_pct"),
    ({"max_drawdown_pct": "100.01"}, "max_drawdown_pct"),
    ({"daily_loss_limit_pct": 1000}, "daily_loss_limit_pct"),
    ({"daily_loss_limit_pct": "1.005"}, "daily_loss_limit_pct"),
    ({"max_order_notional": "0"}, "max_order_notional"),
    ({"max_order_notional": "1e9"}, "max_order_notional"),
    ({"max_order_notional": "10000000000000"}, "max_order_notional"),
    ({"max_open_trades": 0}, "max_open_trades"),
    ({"max_open_trades": "3"}, "max_open_trades"),
    ({"max_open_trades": 10**6}, "max_open_trades"),
    ({"cooldown_after_losses": 3}, "cooldown_minutes"),
    ({"cooldown_minutes": 60}, "cooldown_after_losses"),
    ({"cooldown_after_losses": 3, "cooldown_minutes": 10**9}, "cooldown_minutes"),
    ({"slippage_cap_bps": 5000}, "slippage_cap_bps"),
    ({"slippage_cap_bps": -1}, "slippage_cap_bps"),
    ({"slippage_cap_bps": 2.5}, "slippage_cap_bps"),
    ({"close_on_max_drawdown": "yes"}, "close_on_max_drawdown"),
]


@pytest.mark.parametrize(("override", "field"), BAD)
def test_absurd_protections_are_a_400_with_field_errors_and_write_nothing(
    api, me, them, override, field
):
    # given a strategy to follow, and a subscription of mine with a cooldown
    strategy = StrategyFactory(owner=them, is_public=True)
    mine = subscribe(StrategyFactory(owner=them, is_public=True), user=me)
    mine.cooldown_after_losses, mine.cooldown_minutes = 2, 30
    mine.save(update_fields=["cooldown_after_losses", "cooldown_minutes"])
    before = list(StrategySubscription.objects.order_by("pk").values())

    # when the protection is given out of bounds on subscribe, and on update
    created = api.post(
        f"/api/strategies/{strategy.pk}/subscribe", subscribe_payload(**override), format="json"
    )
    update = {k: v for k, v in override.items() if not k.startswith("cooldown")} or {
        field: None  # turning off one half of a cooldown leaves the other meaningless
    }
    changed = api.put(_url(mine), update, format="json")

    # then both are refused with the field named, and nothing was written
    for response in (created, changed):
        assert response.status_code == 400, response.content
        assert field in field_errors(response), field_errors(response)
    assert list(StrategySubscription.objects.order_by("pk").values()) == before


def test_close_now_closes_the_paper_position_under_its_own_intent(api, me):
    # given a paper position of mine
    subscription, trade = _holding(me)

    # when I close it now, then ask again
    response = api.post(_url(subscription, "/close"))
    again = api.post(_url(subscription, "/close"))

    # then it is closed at the last valuation, less the paper slippage, net of fees
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["subscription_id"] == subscription.pk and body["open_trades"] == []
    assert [(t["id"], t["status"]) for t in body["closed_trades"]] == [(trade.pk, "closed")]
    trade.refresh_from_db()
    slippage = 1 - django_settings.PAPER_SLIPPAGE_BPS / 10000
    assert trade.exit_price == Decimal("0.06") * slippage
    assert trade.metadata["exit_reason"] == "closed by hand"
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8"))
    # through its own intent, with the client order id every order of its kind carries
    close = Order.objects.get(trade=trade, purpose=f"close:{trade.pk}")
    assert close.client_order_id == f"sf-{trade.execution_id}-{subscription.pk}-c{trade.pk}"
    assert (close.status, close.side, close.reduce_only) == ("filled", "sell", True)
    # the subscription keeps following; nothing is left to close the second time
    subscription.refresh_from_db()
    assert subscription.status == "active" and subscription.realized_pnl == trade.pnl
    assert again.status_code == 409 and "no open position" in again.json()["detail"]
    assert Order.objects.filter(trade=trade).count() == 1


def test_cancel_says_what_stays_open_and_closes_it_when_asked(api, me):
    # given four paper positions of mine
    (kept, kept_trade), (closed, closed_trade), (by_body, body_trade), (refused, _) = (
        _holding(me) for _ in range(4)
    )

    # when I cancel one without closing, one with ?close_positions=true, one with a JSON body,
    # and one with a close_positions that is no boolean
    left = api.delete(_url(kept))
    with_close = api.delete(_url(closed, "?close_positions=true"))
    with_body = api.delete(_url(by_body), {"close_positions": True}, format="json")
    bad_query = api.delete(_url(refused, "?close_positions=maybe"))
    bad_body = api.delete(_url(refused), {"close_positions": "true"}, format="json")

    # then the first is cancelled with its position open, and says so
    assert left.status_code == 200, left.content
    assert left.json()["status"] == "cancelled" and left.json()["closed_trades"] == []
    assert [(t["id"], t["status"]) for t in left.json()["open_trades"]] == [(kept_trade.pk, "open")]
    assert not Order.objects.filter(trade=kept_trade).exists()
    # the next two are cancelled and their positions closed
    for response, trade in ((with_close, closed_trade), (with_body, body_trade)):
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "cancelled" and response.json()["open_trades"] == []
        assert [t["id"] for t in response.json()["closed_trades"]] == [trade.pk]
        assert Trade.objects.get(pk=trade.pk).status == "closed"
    # a bad choice is a 400 with the field, and cancels nothing
    for response in (bad_query, bad_body):
        assert response.status_code == 400
        assert "close_positions" in field_errors(response)
    assert StrategySubscription.objects.get(pk=refused.pk).status == "active"

    # when I close the cancelled subscription's position later, by hand
    late = api.post(_url(kept, "/close"))

    # then it is closed: a cancel never strands a position
    assert late.status_code == 200 and late.json()["closed_trades"][0]["id"] == kept_trade.pk


def test_protection_trips_are_listed_newest_first(api, me):
    # given a subscription of mine whose protections tripped twice
    subscription, trade = _holding(me)
    ProtectionTrip.objects.create(
        subscription=subscription,
        protection="cooldown",
        action="entry_skipped",
        reason="cooldown: 3 losing trades or stop-outs in a row",
        figures={"losses_in_a_row": "3"},
        trade=trade,
    )
    ProtectionTrip.objects.create(
        subscription=subscription,
        protection="max_drawdown",
        action="paused",
        reason="max drawdown 12.3% ≥ 10%",
        figures={"drawdown_pct": "12.30", "limit_pct": "10.00"},
    )

    # when I list them
    response = api.get(_url(subscription, "/protection-trips"))

    # then both are there, the newest first, with their figures
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(r["protection"], r["action"], r["trade_id"]) for r in rows] == [
        ("max_drawdown", "paused", None),
        ("cooldown", "entry_skipped", trade.pk),
    ]
    assert rows[0]["figures"] == {"drawdown_pct": "12.30", "limit_pct": "10.00"}
