"""Key custody after a key was taken: every live credential is re-checked periodically.

A key is checked when it is added (subscriptions.keycheck). The exchange can change it later
behind the platform's back: its owner revokes it, enables withdrawals, takes away its trading
permission or its IP restriction. The re-check asks the exchange again, through the hub and the
shared rate limiter, a batch of credentials at a time: the key's permissions where the exchange
exposes them (one signed request that also proves the key still works), else a balance fetch.
A key refused, able to withdraw or unable to trade pauses its subscriptions with the reason
(and the subscriber is notified of the pause); a missing IP restriction is a warning on the
credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.utils import timezone

from subscriptions.keycheck import NO_SPOT_TRADING, PERMISSION_METHODS, permissions_assess
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.selectors import credential_list_live
from subscriptions.services import credential_record_failures
from trades.brokers.account import AccountQuery, AccountSnapshot, live_accounts_fetch
from trades.brokers.live import credential_ref

Status = StrategySubscription.Status
KEY_CHANGED = "key changed on the exchange"


@dataclass
class RecheckOutcome:
    checked: int = 0
    failed: int = 0
    paused: list[int] = field(default_factory=list)  # subscriptions
    requests: int = 0


def live_credentials() -> QuerySet[BrokerCredential]:
    """Credentials behind a live subscription that is not cancelled, with keys still stored."""
    return credential_list_live(statuses=(Status.ACTIVE, Status.PAUSED))


def credential_batches(*, size: int) -> list[list[int]]:
    """Every live credential's id, in batches of ``size`` (one task each)."""
    ids = list(live_credentials().values_list("pk", flat=True))
    return [ids[i : i + size] for i in range(0, len(ids), max(1, size))]


def credentials_recheck(*, credential_ids: Sequence[int]) -> RecheckOutcome:
    """Ask the exchange about each of these keys again; pause the subscriptions of the keys
    it refuses or that grew rights the platform refuses (see the module)."""
    credentials = list(live_credentials().filter(pk__in=list(credential_ids)))
    queries = [
        AccountQuery(permissions=True, balance=c.exchange not in PERMISSION_METHODS)
        for c in credentials
    ]
    refs = [credential_ref(c) for c in credentials]
    snapshots = live_accounts_fetch(list(zip(refs, queries, strict=True)))
    outcome = RecheckOutcome(checked=len(credentials))
    errors: dict[int, str] = {}
    pause: set[int] = set()
    for credential, snapshot in zip(credentials, snapshots, strict=True):
        outcome.requests += snapshot.requests
        reason = _recheck_one(credential, snapshot)
        if reason:
            errors[credential.pk] = reason
            if snapshot.failure is None or snapshot.failure.pauses:
                pause.add(credential.pk)
    outcome.failed = len(errors)
    outcome.paused = credential_record_failures(errors=errors, pause=pause)
    return outcome


def _recheck_one(credential: BrokerCredential, snapshot: AccountSnapshot) -> str:
    """Why this credential must be recorded as failing (and, unless transient, paused)."""
    if not snapshot.ok:
        return f"{KEY_CHANGED}: {snapshot.error}" if snapshot.failure else snapshot.error
    if snapshot.permissions is None:
        return ""  # the balance fetch worked; the exchange tells no more
    permissions, refusal, warnings = permissions_assess(snapshot.permissions)
    credential.permissions, credential.key_warnings = permissions, warnings
    credential.permissions_checked_at = timezone.now()
    credential.save(update_fields=["permissions", "key_warnings", "permissions_checked_at"])
    if refusal:
        return f"{KEY_CHANGED}: {refusal}"
    if NO_SPOT_TRADING in warnings:
        return f"{KEY_CHANGED}: {NO_SPOT_TRADING}"
    return ""
