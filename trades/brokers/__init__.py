from __future__ import annotations

from django.conf import settings

from subscriptions.models import StrategySubscription
from trades.brokers.base import Broker, BrokerUnavailable, OrderRequest, OrderResult
from trades.brokers.paper import PaperBroker

__all__ = ["Broker", "BrokerUnavailable", "OrderRequest", "OrderResult", "broker_for"]


def broker_for(subscription: StrategySubscription) -> Broker:
    if subscription.mode == StrategySubscription.Mode.PAPER:
        return PaperBroker(fee_bps=settings.PAPER_FEE_BPS, slippage_bps=settings.PAPER_SLIPPAGE_BPS)
    raise BrokerUnavailable("live trading through ccxt is not enabled on this deployment")
