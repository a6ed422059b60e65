"""A subscription's orders (intents and their lifecycle) and its position in the stats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.api.helpers import make_order, make_position, make_trade
from tests.factories import StrategyFactory, subscribe

ORDER_FIELDS = {
    "id",
    "trade_id",
    "execution_id",
    "purpose",
    "client_order_id",
    "exchange_order_id",
    "symbol",
    "side",
    "type",
    "amount",
    "price",
    "reduce_only",
    "status",
    "filled",
    "average_price",
    "fee",
    "fee_currency",
    "error",
    "attempts",
    "created_at",
    "sent_at",
    "acknowledged_at",
    "closed_at",
    "updated_at",
}
POSITION_FIELDS = {
    "symbol",
    "currency",
    "side",
    "quantity",
    "average_entry_price",
    "realized_pnl",
    "unrealized_pnl",
    "open_fees",
    "fees_paid",
    "mark_price",
    "updated_at",
}


@pytest.fixture
def orders(me):
    """A closed trade (entry and exit filled), an open one with a partly filled limit entry and
    its resting stop loss and take profit, and a rejected entry; plus another subscription of
    mine with an order of its own."""
    subscription = subscribe(StrategyFactory(), user=me)
    closed = make_trade(subscription, pnl="30")
    opened = make_trade(subscription, status="open", pnl=None)
    rejected = make_trade(subscription, status="rejected", pnl=None, error="insufficient funds")
    made = {
        "entry": make_order(closed),
        "exit": make_order(closed, purpose=f"exit:{closed.pk}", reduce_only=True),
        "partial": make_order(
            opened,
            type="limit",
            price=Decimal("0.049"),
            status="partially_filled",
            filled=Decimal("0.5"),
        ),
        "rejected": make_order(
            rejected,
            status="rejected",
            filled=Decimal("0"),
            average_price=None,
            fee=Decimal("0"),
            exchange_order_id="",
            error="InsufficientFunds: account has insufficient balance",
        ),
    }
    # the exchange-side stop loss and take profit of the open trade, resting
    for kind in ("stop", "take"):
        made[kind] = make_order(
            opened,
            purpose=f"{kind}:{opened.pk}",
            client_order_id=f"sf-{opened.pk}-{kind}",
            side="sell",
            type="limit",
            status="open",
            filled=Decimal("0"),
            average_price=None,
            reduce_only=True,
        )
    make_order(make_trade(subscribe(StrategyFactory(), user=me), status="open", pnl=None))
    return subscription, made


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


@pytest.mark.django_db
def test_a_subscriptions_orders_newest_first_with_their_lifecycle(api, orders):
    subscription, made = orders
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/orders")
    # only this subscription's orders, newest first
    assert _ids(response) == [o.pk for o in reversed(made.values())]
    by_id = {item["id"]: item for item in response.json()["results"]}
    entry = by_id[made["entry"].pk]
    assert set(entry) == ORDER_FIELDS
    assert entry["purpose"] == "entry" and entry["side"] == "buy" and entry["status"] == "filled"
    assert entry["client_order_id"] == made["entry"].client_order_id
    assert entry["trade_id"] == made["entry"].trade_id
    assert entry["execution_id"] == made["entry"].execution_id
    assert Decimal(entry["filled"]) == 2 and Decimal(entry["average_price"]) == Decimal("0.05")
    assert Decimal(entry["fee"]) == Decimal("0.1") and entry["fee_currency"] == "BTC"
    exit_order = by_id[made["exit"].pk]
    assert exit_order["side"] == "sell" and exit_order["reduce_only"] is True
    partial = by_id[made["partial"].pk]
    assert partial["type"] == "limit" and Decimal(partial["price"]) == Decimal("0.049")
    assert partial["status"] == "partially_filled" and Decimal(partial["filled"]) == Decimal("0.5")
    rejected = by_id[made["rejected"].pk]
    assert rejected["error"].startswith("InsufficientFunds") and rejected["average_price"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=filled", {"entry", "exit"}),
        ("status=partially_filled", {"partial"}),
        ("status=open", {"stop", "take"}),
        ("purpose=entry", {"entry", "partial", "rejected"}),
        ("purpose=exit", {"exit"}),
        ("purpose=entry&status=filled", {"entry"}),
        ("purpose=stop", {"stop"}),
        ("purpose=take", {"take"}),
    ],
)
def test_order_filters(api, orders, query, names):
    subscription, made = orders
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/orders?{query}")
    assert set(_ids(response)) == {made[name].pk for name in names}


@pytest.mark.django_db
def test_order_ordering_and_pages(api, orders):
    subscription, made = orders
    url = f"/api/strategies/subscriptions/{subscription.pk}/orders"
    oldest_first = [o.pk for o in made.values()]
    assert _ids(api.get(f"{url}?ordering=created_at")) == oldest_first
    page = api.get(f"{url}?page_size=3&page=2")
    assert page.json()["count"] == 6 and _ids(page) == oldest_first[2::-1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["status=done", "purpose=exit:1", "purpose=stop_loss", "ordering=send_token", "page_size=0"],
)
def test_order_filter_errors_are_400s(api, orders, query):
    subscription, _ = orders
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/orders?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"


@pytest.mark.django_db
def test_order_page_past_the_last_is_a_404(api, orders):
    subscription, _ = orders
    url = f"/api/strategies/subscriptions/{subscription.pk}/orders?page=4&page_size=2"
    assert api.get(url).status_code == 404


@pytest.mark.django_db
def test_orders_of_a_subscription_without_any(api, me):
    subscription = subscribe(StrategyFactory(), user=me)
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/orders")
    assert response.status_code == 200 and response.json()["count"] == 0


@pytest.mark.django_db
def test_orders_show_nothing_of_the_credential(api, me, orders):
    subscription, _ = orders
    body = api.get(f"/api/strategies/subscriptions/{subscription.pk}/orders").content.decode()
    for secret in ("AKIA-plain-key-1234", "very-secret-value-XYZ", "send_token"):
        assert secret not in body


# --- the position in the stats -------------------------------------------------------------


@pytest.mark.django_db
def test_stats_include_the_subscriptions_position(api, me):
    # given a long position marked above its entry
    subscription = subscribe(StrategyFactory(), user=me)
    make_position(subscription)
    # when I ask for the stats
    response = api.get(f"/api/strategies/subscriptions/{subscription.pk}/stats")
    # then the position is there, figure by figure, next to the unchanged fields
    assert response.status_code == 200, response.content
    stats = response.json()
    position = stats["position"]
    assert set(position) == POSITION_FIELDS
    assert position["side"] == "long" and position["symbol"] == subscription.strategy.symbol
    assert Decimal(position["quantity"]) == 2
    assert Decimal(position["average_entry_price"]) == Decimal("0.05")
    assert Decimal(position["realized_pnl"]) == Decimal("12.5")
    assert Decimal(position["unrealized_pnl"]) == Decimal("0.9")
    assert Decimal(position["open_fees"]) == Decimal("0.1")
    assert Decimal(position["fees_paid"]) == Decimal("0.3")
    assert Decimal(position["mark_price"]) == Decimal("0.0555")
    assert stats["open_position"] is None and stats["trades"] == 0


@pytest.mark.django_db
def test_stats_position_is_null_before_the_first_fill_and_flat_after_closing(api, me):
    subscription = subscribe(StrategyFactory(), user=me)
    url = f"/api/strategies/subscriptions/{subscription.pk}/stats"
    assert api.get(url).json()["position"] is None
    make_position(
        subscription,
        side="flat",
        quantity=Decimal("0"),
        average_entry_price=None,
        unrealized_pnl=Decimal("0"),
        open_fees=Decimal("0"),
        mark_price=None,
    )
    position = api.get(url).json()["position"]
    assert position["side"] == "flat" and Decimal(position["quantity"]) == 0
    assert position["average_entry_price"] is None and position["mark_price"] is None
