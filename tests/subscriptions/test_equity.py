from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from subscriptions.models import EquityPoint
from subscriptions.services import subscription_update_settings
from tests.factories import StrategyFactory, subscribe


def _points(sub) -> list[EquityPoint]:
    return list(EquityPoint.objects.filter(subscription=sub).order_by("time", "id"))


@pytest.mark.django_db
def test_subscribing_starts_the_curve_at_the_capital():
    # given / when a subscription with 1000 of capital
    sub = subscribe(StrategyFactory(), capital="1000", risk="0.02")
    # then its one point is the capital, with no PnL, at its creation
    (point,) = _points(sub)
    assert (point.kind, point.time, point.equity, point.capital) == (
        "capital_change",
        sub.created_at,
        Decimal("1000"),
        Decimal("1000"),
    )
    assert (point.realized, point.unrealized, point.fees) == (0, 0, 0)
    assert point.detail == {
        "capital": "1000",
        "risk_per_trade": "0.02",
        "leverage": "1",
        "subscribed": True,
    }


@pytest.mark.django_db
def test_a_capital_change_carries_the_last_points_pnl_over_to_the_new_capital():
    # given a subscriber whose last point holds realized and unrealized PnL and fees
    sub = subscribe(StrategyFactory(), capital="1000")
    EquityPoint.objects.create(
        subscription=sub,
        time=sub.created_at + timedelta(microseconds=1),
        kind=EquityPoint.Kind.CLOSE,
        equity=Decimal("1012.5"),
        capital=Decimal("1000"),
        realized=Decimal("20"),
        unrealized=Decimal("-7.5"),
        fees=Decimal("1.25"),
    )
    # when its capital becomes 2000 and its leverage 2
    sub = subscription_update_settings(
        subscription=sub, capital=Decimal("2000"), leverage=Decimal("2")
    )
    # then the event keeps that PnL on the new capital, with the old sizing in its detail
    event = _points(sub)[-1]
    assert (event.kind, event.time, event.capital) == ("capital_change", sub.updated_at, 2000)
    assert event.equity == Decimal("2012.5")
    assert (event.realized, event.unrealized, event.fees) == (20, Decimal("-7.5"), Decimal("1.25"))
    assert event.detail["previous"]["leverage"].startswith("1")
    assert event.detail["leverage"] == "2"


@pytest.mark.django_db
def test_a_refused_change_writes_no_point():
    # given a subscription
    sub = subscribe(StrategyFactory(), capital="1000")
    # when a change of capital is refused
    with pytest.raises(ValidationError):
        subscription_update_settings(subscription=sub, capital=Decimal("-1"))
    # then the curve still holds its starting point alone (written in the same transaction)
    assert [p.capital for p in _points(sub)] == [Decimal("1000")]
