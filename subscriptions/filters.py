from __future__ import annotations

import django_filters

from core.api import StrictFilterSet
from subscriptions.models import BrokerCredential, StrategySubscription


class SubscriptionFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=StrategySubscription.Status.choices)
    mode = django_filters.ChoiceFilter(choices=StrategySubscription.Mode.choices)
    strategy = django_filters.NumberFilter(
        field_name="strategy_id", min_value=1, max_value=2**63 - 1
    )
    ordering = django_filters.OrderingFilter(fields=("created_at", "capital", "realized_pnl"))

    class Meta:
        model = StrategySubscription
        fields = ("status", "mode")


class CredentialFilter(StrictFilterSet):
    exchange = django_filters.CharFilter(max_length=50)
    is_sandbox = django_filters.BooleanFilter()
    ordering = django_filters.OrderingFilter(fields=("created_at", "label"))

    class Meta:
        model = BrokerCredential
        fields = ("exchange", "is_sandbox")
