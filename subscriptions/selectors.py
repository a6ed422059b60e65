from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404

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


def credential_get_for_user(*, user: User, credential_id: int) -> BrokerCredential:
    credential = credential_list_for_user(user=user).filter(pk=credential_id).first()
    if credential is None:
        raise Http404
    return credential
