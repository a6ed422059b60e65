from decimal import Decimal

import pytest

from strategies.signals import InvalidSignal, SignalType, signal_parse

CLOSE = Decimal("100")


def test_none_is_hold():
    assert signal_parse(None, market_price=CLOSE).type == SignalType.HOLD


def test_valid_long_keeps_prices_as_decimals():
    signal = signal_parse(
        {"signal": "LONG", "price": 100.5, "stopLoss": 99, "takeProfit": 103, "metadata": {"a": 1}},
        market_price=CLOSE,
    )
    assert signal.type == SignalType.LONG
    assert signal.price == Decimal("100.5") and signal.stop_loss == Decimal("99")
    assert signal.metadata == {"a": 1}


def test_missing_price_is_the_close():
    assert signal_parse({"signal": "EXIT_LONG"}, market_price=CLOSE).price == CLOSE


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"signal": "BUY"}, "unknown signal"),
        ([1, 2], "must return a dict"),
        ({"signal": "LONG", "price": float("nan")}, "finite positive"),
        ({"signal": "LONG", "price": float("inf")}, "finite positive"),
        ({"signal": "LONG", "price": -1}, "finite positive"),
        ({"signal": "LONG", "price": "abc"}, "must be a number"),
        ({"signal": "LONG", "price": True}, "must be a number"),
        ({"signal": "LONG", "price": 100, "stopLoss": 101}, "stopLoss"),
        ({"signal": "SHORT", "price": 100, "stopLoss": 99}, "stopLoss"),
        ({"signal": "LONG", "price": 100, "takeProfit": 99}, "takeProfit"),
        ({"signal": "SHORT", "price": 100, "takeProfit": 101}, "takeProfit"),
        ({"signal": "LONG", "metadata": [1]}, "metadata"),
    ],
)
def test_invalid_signals_are_refused_with_a_reason(raw, message):
    with pytest.raises(InvalidSignal, match=message):
        signal_parse(raw, market_price=CLOSE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # the strategy claims a price of 200 to put its stop (or target) on the far side of
        # the market: both are checked against the close, the price the market traded
        ({"signal": "LONG", "price": 200, "stopLoss": 150}, "stopLoss 150 must be below"),
        ({"signal": "SHORT", "price": 50, "stopLoss": 80}, "stopLoss 80 must be above"),
        ({"signal": "LONG", "price": 50, "takeProfit": 80}, "takeProfit 80 must be above"),
        ({"signal": "SHORT", "price": 200, "takeProfit": 150}, "takeProfit 150 must be below"),
        ({"signal": "LONG", "stopLoss": 99, "takeProfit": 100}, "takeProfit 100 must be above"),
    ],
)
def test_stop_and_target_are_checked_against_the_market_price(raw, message):
    # given a close of 100 and a signal whose levels are only valid against its own price
    # when it is parsed
    # then it is refused, naming the market price
    with pytest.raises(InvalidSignal, match=message):
        signal_parse(raw, market_price=CLOSE)


@pytest.mark.parametrize("price", [200, 97.9, 102.1, 50])
def test_an_entry_price_outside_the_band_around_the_close_is_refused(price, settings):
    # given a close of 100 and a band of 2%
    settings.ENTRY_PRICE_BAND = Decimal("0.02")
    # when a LONG claims a price the market did not offer
    # then the signal is invalid, with the distance in the reason
    with pytest.raises(InvalidSignal, match="from the close 100"):
        signal_parse({"signal": "LONG", "price": price}, market_price=CLOSE)


def test_an_exit_price_is_never_used_so_it_may_lie_outside_the_band(settings):
    # given an exit whose price is far from the market (exits always go out at market)
    settings.ENTRY_PRICE_BAND = Decimal("0.02")
    # when parsed
    signal = signal_parse({"signal": "EXIT_LONG", "price": 200}, market_price=CLOSE)
    # then it stands
    assert signal.type == SignalType.EXIT_LONG


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"signal": "LONG", "price": 100, "takeProfit": 1e24}, "'takeProfit' 1e\\+24 is too large"),
        ({"signal": "LONG", "price": 10**400}, "'price' 1.000000e\\+400 is too large"),
        ({"signal": "LONG", "price": "1e18"}, "'price' '1e18' is too large"),
        ({"signal": "EXIT_LONG", "price": 10**18}, "is too large"),
        ({"signal": "LONG", "price": 100, "stopLoss": 1e-13}, "'stopLoss' 1e-13 is too small"),
        ({"signal": "LONG", "price": "NaN"}, "finite positive"),
        ({"signal": "LONG", "price": "-Infinity"}, "finite positive"),
    ],
)
def test_numbers_a_price_column_cannot_hold_are_refused(raw, message):
    # given numbers beyond what the price columns store (derived from their digits and places)
    # when parsed
    # then the signal is invalid with the reason, never an overflow further down
    with pytest.raises(InvalidSignal, match=message):
        signal_parse(raw, market_price=CLOSE)


def test_prices_are_rounded_to_the_columns_places():
    # given a stop with more decimals than a price column keeps
    signal = signal_parse(
        {"signal": "LONG", "price": 100, "stopLoss": 99.1234567890123456}, market_price=CLOSE
    )
    # then the signal carries exactly what will be stored
    assert signal.stop_loss == Decimal("99.123456789012")
    assert signal.price == Decimal("100")


def test_a_signal_records_its_prices_in_plain_notation():
    # given a LONG whose levels are round numbers
    signal = signal_parse(
        {"signal": "LONG", "price": 100.0, "stopLoss": 90, "takeProfit": "120"}, market_price=CLOSE
    )
    # when recorded
    recorded = signal.to_json()
    # then the numbers read as written, never in exponent form
    assert (recorded["price"], recorded["stopLoss"], recorded["takeProfit"]) == ("100", "90", "120")
