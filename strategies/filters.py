from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from core.api import StrictFilterSet, UTCDateTimeFilter
from core.time_utils import CANONICAL_RESOLUTIONS
from strategies.models import Strategy, StrategyExecution


class StrategyFilter(StrictFilterSet):
    mine = django_filters.BooleanFilter(
        method="filter_mine", label="Only my strategies (true) or only others' (false)."
    )
    search = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=120)
    exchange = django_filters.CharFilter(max_length=50)
    symbol = django_filters.CharFilter(max_length=50)
    resolution = django_filters.ChoiceFilter(choices=[(r, r) for r in CANONICAL_RESOLUTIONS])
    status = django_filters.ChoiceFilter(choices=Strategy.Status.choices)
    ordering = django_filters.OrderingFilter(
        fields=("created_at", "name", "subscriber_count", "id")
    )

    class Meta:
        model = Strategy
        fields = ("is_public", "is_marketplace")

    def filter_mine(self, queryset: QuerySet[Strategy], name: str, value: bool | None):
        if value is None:
            return queryset
        user = self.request.user
        return queryset.filter(owner=user) if value else queryset.exclude(owner=user)


class ExecutionFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=StrategyExecution.Status.choices)
    trigger = django_filters.ChoiceFilter(choices=StrategyExecution.Trigger.choices)
    interval_start_after = UTCDateTimeFilter(field_name="interval_start", lookup_expr="gte")
    interval_start_before = UTCDateTimeFilter(field_name="interval_start", lookup_expr="lt")
    ordering = django_filters.OrderingFilter(fields=("interval_start", "duration_ms", "drift_ms"))

    class Meta:
        model = StrategyExecution
        fields = ("status", "trigger")
