"""The exchange simulator's matching: fills only at prices the market traded once the order
was resting."""

from __future__ import annotations

from decimal import Decimal

from tooling.simulator.engine import Exchange, Quote, default_market

MARKET = default_market("ETH/BTC")
STEP_MS = 300_000


def _exchange(candles: list[Quote]) -> Exchange:
    """An exchange whose current candle is the last of ``candles`` (a test appends more)."""
    exchange = Exchange(markets=[MARKET], price_source=lambda market: candles[-1])
    exchange.account_add(api_key="k", secret="s", balances={"BTC": "10", "ETH": "0"})
    return exchange


def _buy_limit(exchange: Exchange, price: str):
    return exchange.order_create(
        account=exchange.account("k"),
        market=MARKET,
        side="BUY",
        type_="LIMIT",
        quantity="1.000",
        price=price,
        client_order_id=None,
        time_in_force="GTC",
    )


def test_a_resting_limit_never_fills_on_the_candle_that_traded_before_it_was_placed():
    # given a candle that closed at 0.0500 after trading down to 0.0490
    candles = [Quote(Decimal("0.05"), Decimal("0.051"), Decimal("0.049"), 0)]
    exchange = _exchange(candles)

    # when a buy limit at 0.0495 (under the close, within the candle's range) rests
    order = _buy_limit(exchange, "0.0495")
    matched = exchange.limits_match()

    # then it stays open however often the book is matched against that candle
    assert (matched, order.status, exchange.limits_match()) == (0, "NEW", 0)


def test_a_resting_limit_fills_at_its_price_on_a_later_candle_that_reaches_it():
    # given a buy limit resting under the market
    candles = [Quote(Decimal("0.05"), Decimal("0.051"), Decimal("0.049"), 0)]
    exchange = _exchange(candles)
    order = _buy_limit(exchange, "0.0495")

    # when a later candle stays above it, then one trades down through it
    candles.append(Quote(Decimal("0.0502"), Decimal("0.0505"), Decimal("0.0498"), STEP_MS))
    stayed_open = exchange.limits_match() == 0 and order.status == "NEW"
    candles.append(Quote(Decimal("0.0497"), Decimal("0.0501"), Decimal("0.0493"), 2 * STEP_MS))

    # then it fills on that candle, at its own price
    assert stayed_open
    assert exchange.limits_match() == 1
    assert order.status == "FILLED" and [f.price for f in order.fills] == [Decimal("0.0495")]
