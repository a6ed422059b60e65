from __future__ import annotations

from django.db.models import QuerySet

from subscriptions.models import StrategySubscription


def subscription_list_active(*, strategy_id: int) -> QuerySet[StrategySubscription]:
    return StrategySubscription.objects.filter(
        strategy_id=strategy_id, status=StrategySubscription.Status.ACTIVE
    ).order_by("id")
