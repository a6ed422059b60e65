from decimal import Decimal

import pytest

from trades.brokers.base import OrderRequest
from trades.brokers.paper import PaperBroker
from trades.sizing import position_quantity, realized_pnl

D = Decimal


def test_stop_loss_sizes_the_position_by_the_risk_taken():
    # given 1000 capital risking 1% with a stop 2 below a price of 100
    # when sized
    qty = position_quantity(
        capital=D("1000"),
        risk_per_trade=D("0.01"),
        leverage=D("1"),
        price=D("100"),
        stop_loss=D("98"),
    )
    # then losing at the stop costs exactly the 10 at risk
    assert qty == D("5")
    assert qty * (D("100") - D("98")) == D("10")


def test_notional_is_capped_by_capital_times_leverage():
    # given a stop so tight the risk-based size would exceed the leverage
    qty = position_quantity(
        capital=D("1000"),
        risk_per_trade=D("0.05"),
        leverage=D("2"),
        price=D("100"),
        stop_loss=D("99.9"),
    )
    # then the notional stays within capital x leverage
    assert qty * D("100") == D("2000")


def test_without_stop_notional_is_capital_times_risk_times_leverage():
    qty = position_quantity(
        capital=D("1000"), risk_per_trade=D("0.02"), leverage=D("3"), price=D("50"), stop_loss=None
    )
    assert qty * D("50") == D("60")


def test_quantity_rounds_down_never_up():
    qty = position_quantity(
        capital=D("1"), risk_per_trade=D("0.01"), leverage=D("1"), price=D("3"), stop_loss=None
    )
    assert qty == D("0.00333333")


def test_bad_price_is_refused():
    with pytest.raises(ValueError):
        position_quantity(
            capital=D("1"), risk_per_trade=D("0.01"), leverage=D("1"), price=D("0"), stop_loss=None
        )


@pytest.mark.parametrize(
    ("side", "entry", "exit_", "expected"),
    [("long", "100", "110", "9"), ("short", "100", "90", "9"), ("long", "100", "95", "-6")],
)
def test_realized_pnl_is_net_of_fees(side, entry, exit_, expected):
    pnl = realized_pnl(
        side=side, quantity=D("1"), entry_price=D(entry), exit_price=D(exit_), fees=D("1")
    )
    assert pnl == D(expected)


def test_paper_broker_fills_at_close_with_adverse_slippage_and_fee():
    # given 10 bps fee and 5 bps slippage
    broker = PaperBroker(fee_bps=D("10"), slippage_bps=D("5"))
    from datetime import UTC, datetime

    when = datetime(2018, 1, 1, tzinfo=UTC)
    buy = OrderRequest(
        symbol="ETH/BTC",
        side="buy",
        quantity=D("2"),
        client_order_id="a",
        reference_price=D("100"),
        reference_time=when,
    )
    # when a buy and a sell fill
    bought = broker.place_market_order(buy)
    sold = broker.place_market_order(
        OrderRequest(**{**buy.__dict__, "side": "sell", "client_order_id": "b"})
    )
    # then buys pay up, sells receive less, and the fee is on the notional
    assert bought.average_price == D("100.05") and sold.average_price == D("99.95")
    assert bought.fee == D("0.20010000") and bought.fee_currency == "BTC"
    assert bought.filled_at == when and bought.exchange_order_id == "paper-a"


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_paper_limit_order_fills_at_the_market_never_at_its_own_price(side):
    # given a paper limit entry resting at a price the market did not trade (the signal's)
    from datetime import UTC, datetime

    broker = PaperBroker(fee_bps=D("10"), slippage_bps=D("5"))
    order = OrderRequest(
        symbol="ETH/BTC",
        side=side,
        quantity=D("1"),
        client_order_id="l",
        reference_price=D("100"),
        reference_time=datetime(2018, 1, 1, tzinfo=UTC),
        type="limit",
        price=D("150") if side == "sell" else D("50"),
    )
    # when it fills
    filled = broker.place_market_order(order)
    # then at the market price, with the adverse slippage of any paper fill
    assert filled.average_price == (D("100.05") if side == "buy" else D("99.95"))
