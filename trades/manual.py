"""Manual control of a follower's position: close it now, or cancel the subscription with it.

Both go through the exactly-once order path of every other close (``trades.services
.trades_close``: the trade's claim, its own ``close:<trade>`` intent, a deterministic client
order id looked up before any resend), paper and live alike. A live close waits for the
exchange's answer; one that stays unknown (the answer was lost) is finished by the order
sync, and the trade is reported still open until then, with the reason on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_cancel
from trades.models import Trade
from trades.services import MANUAL_CLOSE, positions_close


class NothingToClose(Exception):
    """The subscription holds no open position (the API answers 409)."""


@dataclass(frozen=True)
class CloseOutcome:
    closed: list[Trade]  # the trades this request closed
    still_open: list[Trade]  # the subscription's trades open after it, each with its reason


def subscription_close_now(*, subscription: StrategySubscription) -> CloseOutcome:
    """Close the subscription's open position at market, now."""
    trades = _open_trades(subscription)
    if not trades:
        raise NothingToClose("the subscription has no open position")
    return _close(subscription, trades)


def subscription_cancel_and_close(
    *, subscription: StrategySubscription, close_positions: bool
) -> tuple[StrategySubscription, CloseOutcome]:
    """Cancel the subscription (no new entries from now on), then close its position when
    asked; what stays open is in the outcome, so the caller can say so."""
    cancelled = subscription_cancel(subscription=subscription)
    trades = _open_trades(cancelled)
    if close_positions and trades:
        return cancelled, _close(cancelled, trades)
    return cancelled, CloseOutcome(closed=[], still_open=trades)


def _open_trades(subscription: StrategySubscription) -> list[Trade]:
    return list(
        Trade.objects.filter(subscription=subscription, status=Trade.Status.OPEN).order_by("pk")
    )


def _close(subscription: StrategySubscription, trades: list[Trade]) -> CloseOutcome:
    positions_close(trades=trades, reason=MANUAL_CLOSE)
    closed = Trade.objects.filter(pk__in=[t.pk for t in trades], status=Trade.Status.CLOSED)
    return CloseOutcome(closed=list(closed.order_by("pk")), still_open=_open_trades(subscription))
