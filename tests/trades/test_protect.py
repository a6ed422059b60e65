"""The candle-close fill rule for stops and targets: the first level the candle's path reaches."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trades.protect import ProtectiveFill, protective_fill

D = Decimal


def _fill(side: str, *, stop: str | None, target: str | None, o: str, h: str, low: str):
    return protective_fill(
        side=side,
        stop_loss=D(stop) if stop is not None else None,
        take_profit=D(target) if target is not None else None,
        open_price=D(o),
        high=D(h),
        low=D(low),
    )


@pytest.mark.parametrize(
    ("side", "stop", "target", "o", "h", "low", "expected"),
    [
        # a long whose candle opens under its stop (gapped through it): filled at the open
        ("long", "95", "110", "90", "92", "85", ProtectiveFill("stop loss", D("90"))),
        # a short whose candle opens above its stop: filled at the open
        ("short", "105", "90", "112", "115", "108", ProtectiveFill("stop loss", D("112"))),
        # a long opening beyond its target: the open, not the (worse) target
        ("long", "95", "110", "118", "120", "112", ProtectiveFill("take profit", D("118"))),
        ("short", "105", "90", "84", "86", "80", ProtectiveFill("take profit", D("84"))),
        # opening on the level itself: the level (and the open) is the price
        ("long", "95", None, "95", "99", "94", ProtectiveFill("stop loss", D("95"))),
    ],
)
def test_a_candle_opening_beyond_a_level_fills_at_its_open(side, stop, target, o, h, low, expected):
    # given a trade and a candle that opened beyond its stop or target
    # when the closed candle is checked
    # then it fills at the open, the first price traded beyond the level
    assert _fill(side, stop=stop, target=target, o=o, h=h, low=low) == expected


@pytest.mark.parametrize(
    ("side", "stop", "target", "o", "h", "low"),
    [("long", "95", "110", "100", "111", "94"), ("short", "105", "90", "100", "106", "89")],
)
def test_a_candle_opening_between_them_and_touching_both_takes_the_stop(
    side, stop, target, o, h, low
):
    # given a candle opening between stop and target whose range reaches both
    # when checked
    # then the stop is taken, at the stop (the conservative reading of an unknown path)
    assert _fill(side, stop=stop, target=target, o=o, h=h, low=low) == ProtectiveFill(
        "stop loss", D(stop)
    )


@pytest.mark.parametrize(
    ("side", "stop", "target", "o", "h", "low", "expected"),
    [
        ("long", "95", "110", "100", "104", "94", ProtectiveFill("stop loss", D("95"))),
        ("long", "95", "110", "100", "111", "96", ProtectiveFill("take profit", D("110"))),
        ("short", "105", "90", "100", "106", "95", ProtectiveFill("stop loss", D("105"))),
        ("short", "105", "90", "100", "104", "89", ProtectiveFill("take profit", D("90"))),
        ("long", None, "110", "100", "111", "50", ProtectiveFill("take profit", D("110"))),
    ],
)
def test_a_level_touched_inside_the_candle_fills_at_the_level(
    side, stop, target, o, h, low, expected
):
    assert _fill(side, stop=stop, target=target, o=o, h=h, low=low) == expected


def test_a_candle_touching_neither_fills_nothing():
    assert _fill("long", stop="95", target="110", o="100", h="109", low="96") is None
    assert _fill("short", stop=None, target=None, o="100", h="200", low="1") is None
