"""The capital-change points of a subscription's equity curve (subscribing, new sizing).

They are computed from the subscription's last point alone: the PnL a subscription earned is
what its curve last recorded, so this app needs nothing from the trades app above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from subscriptions.models import EquityPoint, StrategySubscription

ZERO = Decimal("0")
MONEY_STEP = Decimal("0.00000001")


def equity_point_capital_change(
    *, subscription: StrategySubscription, previous: Mapping[str, Decimal] | None, time: datetime
) -> EquityPoint:
    """Store the event of a new capital, risk or leverage (of subscribing: ``previous`` None).

    The PnL carries over from the last point and only the capital changes, so equity = new
    capital + realized + unrealized. The points before it keep the capital they were stored
    with: history is not recomputed on the new settings.
    """
    # The last point written: ids are causal order, whatever time each point describes.
    last = EquityPoint.objects.filter(subscription=subscription).order_by("-id").first()
    realized, unrealized, fees = (
        (last.realized, last.unrealized, last.fees) if last is not None else (ZERO, ZERO, ZERO)
    )
    capital = Decimal(subscription.capital)
    return EquityPoint.objects.create(
        subscription=subscription,
        time=time,
        kind=EquityPoint.Kind.CAPITAL_CHANGE,
        equity=(capital + realized + unrealized).quantize(MONEY_STEP),
        capital=capital,
        realized=realized,
        unrealized=unrealized,
        fees=fees,
        detail=_detail(subscription, previous),
    )


def _detail(
    subscription: StrategySubscription, previous: Mapping[str, Decimal] | None
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "capital": str(subscription.capital),
        "risk_per_trade": str(subscription.risk_per_trade),
        "leverage": str(subscription.leverage),
    }
    if previous is None:
        detail["subscribed"] = True
    else:
        detail["previous"] = {name: str(value) for name, value in previous.items()}
    return detail
