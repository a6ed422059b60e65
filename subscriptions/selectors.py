from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Avg, Count, QuerySet, Sum
from django.http import Http404

from markets.symbols import symbol_quote
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import strategy_drift_percentiles
from subscriptions.models import BrokerCredential, StrategySubscription


def subscription_list_active(*, strategy_id: int) -> QuerySet[StrategySubscription]:
    return StrategySubscription.objects.filter(
        strategy_id=strategy_id, status=StrategySubscription.Status.ACTIVE
    ).order_by("id")


def subscription_list_for_user(*, user: User) -> QuerySet[StrategySubscription]:
    return StrategySubscription.objects.filter(user=user).select_related("strategy")


def subscription_get_for_user(*, user: User, subscription_id: int) -> StrategySubscription:
    """404 for anyone else's subscription: its existence is not revealed."""
    subscription = subscription_list_for_user(user=user).filter(pk=subscription_id).first()
    if subscription is None:
        raise Http404
    return subscription


def credential_list_for_user(*, user: User) -> QuerySet[BrokerCredential]:
    # Erased credentials (see credential_delete) are gone as far as their owner is concerned.
    return BrokerCredential.objects.filter(user=user).exclude(secret_encrypted="")


def credential_list_live(*, statuses: tuple[str, ...]) -> QuerySet[BrokerCredential]:
    """Credentials behind a live subscription in one of ``statuses``, with keys still stored."""
    return (
        BrokerCredential.objects.filter(
            subscriptions__mode=StrategySubscription.Mode.LIVE,
            subscriptions__status__in=statuses,
        )
        .exclude(secret_encrypted="")
        .distinct()
        .order_by("pk")
    )


def credential_get_for_user(*, user: User, credential_id: int) -> BrokerCredential:
    credential = credential_list_for_user(user=user).filter(pk=credential_id).first()
    if credential is None:
        raise Http404
    return credential


def strategy_stats(*, strategy: Strategy) -> dict[str, Any]:
    executions = StrategyExecution.objects.filter(strategy=strategy)
    by_status = {choice: 0 for choice in StrategyExecution.Status.values}
    for row in executions.values("status").annotate(n=Count("id")).order_by():
        by_status[row["status"]] = row["n"]
    totals = executions.aggregate(
        average_duration_ms=Avg("duration_ms"), trades_generated=Sum("trades_generated")
    )
    subscriptions = StrategySubscription.objects.filter(strategy=strategy)
    money = subscriptions.aggregate(
        pnl=Sum("realized_pnl"), fees=Sum("fees_paid"), capital=Sum("capital")
    )
    pnl, capital = money["pnl"] or Decimal("0"), money["capital"] or Decimal("0")
    Status = StrategySubscription.Status
    return {
        "strategy_id": strategy.pk,
        "executions_total": sum(by_status.values()),
        "executions_by_status": by_status,
        "average_duration_ms": totals["average_duration_ms"],
        **strategy_drift_percentiles(strategy=strategy),
        "active_subscribers": subscriptions.filter(status=Status.ACTIVE).count(),
        "paused_subscribers": subscriptions.filter(status=Status.PAUSED).count(),
        "trades_generated": totals["trades_generated"] or 0,
        # Over every subscription, cancelled ones included: their trades happened.
        "currency": symbol_quote(strategy.symbol),
        "subscribers_realized_pnl": pnl,
        "subscribers_fees": money["fees"] or Decimal("0"),
        # In return terms: their PnL over their capital, so large and small accounts weigh
        # as what they put in, and the figure means the same whoever subscribed.
        "subscribers_realized_return_pct": (pnl / capital * 100).quantize(Decimal("0.0001"))
        if capital
        else None,
    }
