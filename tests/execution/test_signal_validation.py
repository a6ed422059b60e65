from decimal import Decimal

import pytest

from strategies.signals import InvalidSignal, SignalType, signal_parse

CLOSE = Decimal("100")


def test_none_is_hold():
    assert signal_parse(None, fallback_price=CLOSE).type == SignalType.HOLD


def test_valid_long_keeps_prices_as_decimals():
    signal = signal_parse(
        {"signal": "LONG", "price": 100.5, "stopLoss": 99, "takeProfit": 103, "metadata": {"a": 1}},
        fallback_price=CLOSE,
    )
    assert signal.type == SignalType.LONG
    assert signal.price == Decimal("100.5") and signal.stop_loss == Decimal("99")
    assert signal.metadata == {"a": 1}


def test_missing_price_falls_back_to_the_close():
    assert signal_parse({"signal": "EXIT_LONG"}, fallback_price=CLOSE).price == CLOSE


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
        signal_parse(raw, fallback_price=CLOSE)
