"""Brokers: paper (in process) and live (ccxt, through this process's exchange hub,
``trades.brokers.live``); ``trades.orders.orders_send`` routes each leg to one of them."""

from __future__ import annotations

from django.conf import settings

from trades.brokers.base import (
    OrderRequest,
    OrderResult,
    OrderStatus,
)
from trades.brokers.paper import PaperBroker

__all__ = [
    "OrderRequest",
    "OrderResult",
    "OrderStatus",
    "PaperBroker",
    "paper_broker",
]


def paper_broker() -> PaperBroker:
    return PaperBroker(fee_bps=settings.PAPER_FEE_BPS, slippage_bps=settings.PAPER_SLIPPAGE_BPS)
