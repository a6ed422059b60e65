"""Brokers: paper (in process) and live (ccxt, through this process's exchange hub)."""

from __future__ import annotations

from django.conf import settings

from subscriptions.models import StrategySubscription
from trades.brokers.base import (
    Broker,
    BrokerUnavailable,
    OrderRequest,
    OrderResult,
    OrderStatus,
)
from trades.brokers.paper import PaperBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "LiveBroker",
    "OrderRequest",
    "OrderResult",
    "OrderStatus",
    "PaperBroker",
    "broker_for",
    "paper_broker",
]


def paper_broker() -> PaperBroker:
    return PaperBroker(fee_bps=settings.PAPER_FEE_BPS, slippage_bps=settings.PAPER_SLIPPAGE_BPS)


class LiveBroker:
    """One subscriber's ccxt broker, for one-off orders (the fan-out sends in batches)."""

    def __init__(self, subscription: StrategySubscription) -> None:
        if subscription.credential is None:
            raise BrokerUnavailable("a live subscription needs a credential")
        self.credential = subscription.credential

    def place_market_order(self, order: OrderRequest) -> OrderResult:
        from trades.brokers.live import credential_ref, live_place_many

        return live_place_many([(credential_ref(self.credential), order)])[0]


def broker_for(subscription: StrategySubscription) -> Broker:
    if subscription.mode == StrategySubscription.Mode.PAPER:
        return paper_broker()
    return LiveBroker(subscription)
