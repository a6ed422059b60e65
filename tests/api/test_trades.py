from __future__ import annotations

from decimal import Decimal

import pytest

from tests.api.helpers import make_trade
from tests.factories import StrategyFactory, subscribe

TRADE_FIELDS = {
    "id",
    "execution_id",
    "exit_execution_id",
    "symbol",
    "side",
    "status",
    "quantity",
    "entry_price",
    "entry_time",
    "exit_price",
    "exit_time",
    "stop_loss",
    "take_profit",
    "entry_fee",
    "exit_fee",
    "pnl",
    "currency",
    "client_order_id",
    "error",
    "created_at",
}


@pytest.fixture
def trades(me):
    subscription = subscribe(StrategyFactory(), user=me)
    return subscription, {
        "win": make_trade(subscription, pnl="30"),
        "loss": make_trade(subscription, pnl="-10", side="short"),
        "open": make_trade(subscription, status="open", pnl=None),
        "failed": make_trade(subscription, status="failed", pnl=None, error="insufficient funds"),
    }


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


@pytest.mark.django_db
def test_a_subscriptions_trades_newest_first_with_every_field(api, trades):
    subscription, made = trades
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/trades")
    assert _ids(response) == [t.pk for t in reversed(made.values())]
    by_id = {item["id"]: item for item in response.json()["results"]}
    win = by_id[made["win"].pk]
    assert set(win) == TRADE_FIELDS
    assert Decimal(win["pnl"]) == 30 and win["status"] == "closed" and win["side"] == "long"
    assert win["currency"] == "BTC"  # of its prices, fees and PnL: ETH/BTC's quote
    assert win["execution_id"] == made["win"].execution_id
    assert win["client_order_id"] == made["win"].client_order_id
    assert by_id[made["failed"].pk]["error"] == "insufficient funds"
    assert by_id[made["open"].pk]["exit_price"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=closed", {"win", "loss"}),
        ("status=open", {"open"}),
        ("side=short", {"loss"}),
        ("status=closed&side=long", {"win"}),
    ],
)
def test_trade_filters(api, trades, query, names):
    subscription, made = trades
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/trades?{query}")
    assert set(_ids(response)) == {made[name].pk for name in names}


@pytest.mark.django_db
def test_trade_ordering_and_pages(api, trades):
    subscription, made = trades
    url = f"/api/strategies/subscriptions/{subscription.pk}/trades"
    assert _ids(api.get(f"{url}?ordering=pnl&status=closed")) == [made["loss"].pk, made["win"].pk]
    page = api.get(f"{url}?page_size=3&page=2")
    assert page.json()["count"] == 4 and len(_ids(page)) == 1
    for bad in ("status=won", "side=up", "ordering=metadata", "page=3"):
        assert api.get(f"{url}?{bad}").status_code in (400, 404), bad
