from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from core.api import StrictFilterSet
from trades.models import Order, Trade
from trades.purposes import PurposeKind, purpose_kind_q


class TradeFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Trade.Status.choices)
    side = django_filters.ChoiceFilter(choices=Trade.Side.choices)
    ordering = django_filters.OrderingFilter(
        fields=("created_at", "entry_time", "exit_time", "pnl")
    )

    class Meta:
        model = Trade
        fields = ("status", "side")


class OrderFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Order.Status.choices)
    purpose = django_filters.ChoiceFilter(
        choices=(
            (PurposeKind.ENTRY.value, "Entry"),
            (PurposeKind.EXIT.value, "Exit"),
            (PurposeKind.STOP.value, "Stop loss"),
            (PurposeKind.TAKE.value, "Take profit"),
            (PurposeKind.CLOSE.value, "Close (by hand or by a protection)"),
        ),
        method="filter_purpose",
        help_text="`entry`, or `exit`, `stop` (stop loss), `take` (take profit) or `close` (by "
        "hand or by a protection) for those orders of every trade.",
    )
    ordering = django_filters.OrderingFilter(fields=("created_at", "closed_at", "status"))

    class Meta:
        model = Order
        fields = ("status",)

    def filter_purpose(self, queryset: QuerySet[Order], name: str, value: str) -> QuerySet[Order]:
        return queryset.filter(purpose_kind_q(PurposeKind(value)))
