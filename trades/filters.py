from __future__ import annotations

import django_filters

from config.api import StrictFilterSet
from trades.models import Trade


class TradeFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Trade.Status.choices)
    side = django_filters.ChoiceFilter(choices=Trade.Side.choices)
    ordering = django_filters.OrderingFilter(
        fields=("created_at", "entry_time", "exit_time", "pnl")
    )

    class Meta:
        model = Trade
        fields = ("status", "side")
